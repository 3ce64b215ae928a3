"""Issue 7, the manager's part of tenancy, attacked over HTTP as a token holder would.

Idempotency keys, dependencies, queues, quotas, fair share and commit isolation:
each test is a row of the issue's attack table (or part of one) and passes only
when the attack fails the way the issue says it must.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from raytasks.settings import QuotaSettings
from tests.conftest import wait_for
from tests.httpserver import auth

PREDICTION = {"name": "p", "task_type": "prediction",
              "parameters": {"stock_code": "000001.SZ", "days": 5}}


def _sleepy(seconds: float, **kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": seconds}, **kw}


def _client(api: Any, who: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers=auth(who), timeout=60)


def test_another_owners_idempotency_key_never_returns_their_task(api: Any) -> None:
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        # Given alice's task created under a key, with her parameters
        theirs = alice.post("/tasks", json={**_sleepy(0.0), "idempotency_key": "K1",
                                            "name": "alice-secret"}).json()
        # When bob creates with the same key, alone and in a batch
        mine = bob.post("/tasks", json={**_sleepy(0.0), "idempotency_key": "K1"})
        batch = bob.post("/tasks/batch", json=[{**_sleepy(0.0), "idempotency_key": "K1"}])
        # Then he gets a task of his own, never hers
        assert mine.status_code == 201 and batch.status_code == 201
        for task in (mine.json(), batch.json()[0]):
            assert task["owner"] == "bob" and task["id"] != theirs["id"]
            assert task["name"] != "alice-secret"
        assert batch.json()[0]["id"] == mine.json()["id"]  # his own key works for him
        # And alice's repeat still finds her own task
        again = alice.post("/tasks", json={**_sleepy(0.0), "idempotency_key": "K1"}).json()
        assert again["id"] == theirs["id"]


def test_claiming_a_key_first_does_not_hijack_another_owners_create(api: Any) -> None:
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        # Given bob claims the key alice's pipeline will use
        claimed = bob.post("/tasks", json={**_sleepy(0.0), "idempotency_key": "nightly"}).json()
        # When alice creates with it
        hers = alice.post("/tasks", json={**_sleepy(0.0), "idempotency_key": "nightly",
                                          "name": "alice-nightly"})
        # Then alice gets her own new task, and bob cannot see it
        assert hers.status_code == 201 and hers.json()["owner"] == "alice"
        assert hers.json()["id"] != claimed["id"]
        assert bob.get(f"/tasks/{hers.json()['id']}").status_code == 404


def test_depends_on_another_owners_task_is_the_same_422_as_a_random_id(api: Any) -> None:
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        theirs = alice.post("/tasks", json=_sleepy(0.0)).json()
        # When bob names alice's task, and a random id, as a dependency
        on_theirs = bob.post("/tasks", json={**_sleepy(0.0), "depends_on": [theirs["id"]]})
        on_random = bob.post("/tasks", json={**_sleepy(0.0), "depends_on": ["f" * 32]})
        # Then both get the same refusal: no oracle for which ids exist
        assert on_theirs.status_code == on_random.status_code == 422
        assert on_theirs.json()["errors"][0]["field"] == "depends_on"
        assert on_theirs.json()["message"].replace(theirs["id"], "X") == \
            on_random.json()["message"].replace("f" * 32, "X")


def test_an_admin_depends_on_the_admins_own_tasks(api: Any) -> None:
    # depends_on accepts only the caller's own tasks: for an admin, the admin's own
    with _client(api, "alice") as alice, _client(api, "root") as root:
        theirs = alice.post("/tasks", json=_sleepy(0.0)).json()
        mine = root.post("/tasks", json=_sleepy(0.0)).json()
        r = root.post("/tasks", json={**_sleepy(0.0), "depends_on": [mine["id"]]})
        assert r.status_code == 201, r.text
        r = root.post("/tasks", json={**_sleepy(0.0), "depends_on": [theirs["id"]]})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "depends_on"


def test_queues_come_from_the_settings(api: Any) -> None:
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        # Given a full default queue (20 of 20: alice's half and bob's)
        blocker = alice.post("/tasks", json=_sleepy(30)).json()
        wait_for(lambda: alice.get(f"/tasks/{blocker['id']}").json()["status"] == "RUNNING")
        assert alice.post("/tasks/batch", json=[_sleepy(0)] * 10).status_code == 201
        assert bob.post("/tasks/batch", json=[_sleepy(0)] * 10).status_code == 201
        # When more tasks name invented queues to get past it
        invented = [alice.post("/tasks", json=_sleepy(0, queue=f"mine-{i}")) for i in range(3)]
        # Then each is refused, naming the field and the configured queues
        for r in invented:
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "queue"
            assert "default" in r.json()["errors"][0]["reason"]
        alice.post(f"/tasks/{blocker['id']}/cancel")


@pytest.mark.parametrize("body, field, limit", [
    ({**_sleepy(0), "timeout_s": 1e9}, "timeout_s", "max_timeout_s"),
    ({**_sleepy(0), "max_retries": 100}, "max_retries", "max_retries"),
    ({"name": "grid", "task_type": "backtest", "parameters": {
        "kind": "optimize", "start": "2005-01-04", "end": "2024-12-31",
        "fast_values": list(range(1, 200)), "slow_values": list(range(2, 202))}},
     "parameters", "max_work_units"),
    ({"name": "sync", "task_type": "data", "parameters": {
        "kind": "sync", "start": "2005-01-04", "end": "2024-12-31",
        "codes": [f"{i:06d}.SZ" for i in range(5000)]}}, "parameters", "max_work_units"),
])
def test_ceilings_refuse_oversized_requests_naming_the_limit(
        shared_api: Any, body: dict[str, Any], field: str, limit: str) -> None:
    with _client(shared_api, "alice") as alice:
        r = alice.post("/tasks", content=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        error = r.json()["errors"][0]
        assert error["field"] == field and limit in error["reason"]


def test_a_million_pair_grid_is_refused_at_validation(shared_api: Any) -> None:
    with _client(shared_api, "alice") as alice:
        r = alice.post("/tasks", json={"name": "grid", "task_type": "backtest", "parameters": {
            "kind": "optimize", "fast_values": list(range(1, 1001)),
            "slow_values": list(range(1, 1001))}})
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["errors"]} >= {"parameters.fast_values"}


def test_one_owner_at_its_pending_quota_does_not_shut_out_another(make_api: Any) -> None:
    api = make_api(max_queue_size=50, quotas={"*": QuotaSettings(max_pending=5)})
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        blocker = alice.post("/tasks", json=_sleepy(30)).json()
        wait_for(lambda: alice.get(f"/tasks/{blocker['id']}").json()["status"] == "RUNNING")
        # Given alice at her limit of 5 pending tasks
        assert alice.post("/tasks/batch", json=[_sleepy(0)] * 5).status_code == 201
        # When she asks for more, Then 429 names the limit
        r = alice.post("/tasks", json=_sleepy(0))
        assert r.status_code == 429 and r.json()["error"] == "QuotaExceededError"
        assert r.json()["limit"] == "max_pending" and "max_pending=5" in r.json()["message"]
        # And bob still gets in
        assert bob.post("/tasks", json=_sleepy(0)).status_code == 201
        alice.post(f"/tasks/{blocker['id']}/cancel")


def test_an_owner_runs_at_most_its_running_quota(make_api: Any) -> None:
    api = make_api(sleepy_workers=2, quotas={"alice": QuotaSettings(max_running=1),
                                             "*": QuotaSettings()})
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        # Given two idle workers and alice allowed one running task
        first, second = alice.post("/tasks/batch", json=[_sleepy(30), _sleepy(30)]).json()
        wait_for(lambda: alice.get(f"/tasks/{first['id']}").json()["status"] == "RUNNING",
                 what="alice's first task running")
        # When bob submits, Then his task takes the second worker, alice's second waits
        theirs = bob.post("/tasks", json=_sleepy(30)).json()
        wait_for(lambda: bob.get(f"/tasks/{theirs['id']}").json()["status"] == "RUNNING",
                 what="bob's task running beside alice's")
        assert alice.get(f"/tasks/{second['id']}").json()["status"] == "PENDING"
        for c, t in ((alice, first), (alice, second), (bob, theirs)):
            c.post(f"/tasks/{t['id']}/cancel")


def test_one_owners_backlog_does_not_shut_out_another(make_api: Any) -> None:
    api = make_api(max_queue_size=100)
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        blocker = alice.post("/tasks", json=_sleepy(1.0)).json()
        wait_for(lambda: alice.get(f"/tasks/{blocker['id']}").json()["status"] == "RUNNING")
        # Given alice's backlog of 20 tasks on the one worker, queued before bob's one
        backlog = alice.post("/tasks/batch", json=[_sleepy(0.05)] * 20).json()
        theirs = bob.post("/tasks", json=_sleepy(0.05)).json()
        # When they all run
        ids = [t["id"] for t in backlog]
        wait_for(lambda: bob.get(f"/tasks/{theirs['id']}").json()["status"] == "COMPLETED",
                 timeout_s=60, what="bob's task")
        started = bob.get(f"/tasks/{theirs['id']}").json()["started_at"]
        before = [i for i in ids if (t := alice.get(f"/tasks/{i}").json())["started_at"]
                  and t["started_at"] < started]
        # Then bob's task started before most of alice's (fair share within a priority)
        assert len(before) < 5, f"{len(before)} of alice's 20 tasks started before bob's"


def test_a_malformed_create_never_fails_another_owners_concurrent_create(api: Any) -> None:
    bad_bodies = [
        b'{"name": "n", "task_type": "sleepy", "parameters": {"seconds": NaN}}',
        b'{"name": "n", "task_type": "sleepy", "tags": ["\\ud800"]}',
        b'{"name": "n", "task_type": "sleepy", "parameters": {"seconds": "soon"}}',
        b'{"name": "n", "task_type": "sleepy", "parameters": {"x": 1e400}}',
    ]
    statuses: dict[str, list[int]] = {"alice": [], "bob": []}

    def send(who: str, bodies: list[bytes]) -> None:
        with _client(api, who) as c:
            for body in bodies:
                statuses[who].append(c.post("/tasks", content=body, headers={
                    "Content-Type": "application/json"}).status_code)

    good = json.dumps(_sleepy(0.0)).encode()
    # Given alice sending malformed creates while bob sends good ones, at the same time
    threads = [threading.Thread(target=send, args=("alice", bad_bodies * 3)),
               threading.Thread(target=send, args=("bob", [good] * 10))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every one of alice's is refused and every one of bob's created
    assert statuses["alice"] == [422] * 12
    assert statuses["bob"] == [201] * 10  # his share of the queue of 20
