"""Fair room, attacked over HTTP as a token holder would: one owner's backlog never
refuses another owner's create, and tasks waiting for their dependencies take room too."""

from __future__ import annotations

from typing import Any

import httpx

from tests.httpserver import auth


def _sleepy(**kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": 60}, **kw}


def test_one_owners_backlog_never_refuses_another_owners_create(make_api: Any) -> None:
    # Given a queue of 8 that nothing drains, and bob filling it as fast as he can
    api = make_api(sleepy_workers=0, max_queue_size=8)
    with httpx.Client(base_url=api.url, timeout=60) as http:
        codes = [http.post("/tasks", json=_sleepy(), headers=auth("bob")).status_code
                 for _ in range(8)]
        refused = http.post("/tasks", json=_sleepy(), headers=auth("bob"))
        # Then bob is held at his own share of the queue, told which limit and how much
        assert codes == [201] * 4 + [429] * 4
        assert refused.status_code == 429
        assert "max_queue_share=4" in refused.json()["message"]
        # and alice still gets her room, though bob keeps trying
        mine = http.post("/tasks", json=_sleepy(), headers=auth("alice"))
        assert mine.status_code == 201, mine.text


def test_tasks_waiting_for_their_dependencies_take_room(make_api: Any) -> None:
    # Given a queue of 8, one task that never finishes, and tasks that depend on it
    api = make_api(sleepy_workers=0, max_queue_size=8)
    with httpx.Client(base_url=api.url, timeout=60, headers=auth("bob")) as bob, \
            httpx.Client(base_url=api.url, timeout=60, headers=auth("alice")) as alice:
        parent = bob.post("/tasks", json=_sleepy()).json()["id"]
        children = [bob.post("/tasks", json=_sleepy(depends_on=[parent])).status_code
                    for _ in range(12)]
        theirs = [alice.post("/tasks", json=_sleepy()).status_code for _ in range(12)]
        third = httpx.post(f"{api.url}/tasks", json=_sleepy(), headers=auth("root"),
                           timeout=60)
    # Then bob's waiting children count against his share (the parent included)
    assert children.count(201) == 3
    assert theirs.count(201) == 4
    # and the queue as a whole holds its size: 12 waiting tasks were accepted under a
    # limit of 8 before, when only the ready ones counted
    assert third.status_code == 429 and third.json()["error"] == "QueueFullError", third.text
