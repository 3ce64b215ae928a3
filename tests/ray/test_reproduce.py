"""Re-run and verify on a real local Ray cluster: every built-in family reproduces its
result; a handler that is not deterministic, or whose code changed, does not, and says
which input moved. Over HTTP, a re-run and its verdict stay the owner's."""

from __future__ import annotations

import random
from typing import Any

import httpx

from raytasks import TaskCreateRequest, TaskManager, TaskStatus, register_task_type
from raytasks.settings import TaskTypeSettings
from tests.conftest import wait_for
from tests.httpserver import auth

RANGE = {"start": "2022-01-04", "end": "2022-12-30"}
FAMILIES = [
    ("prediction", {"stock_code": "000001.SZ", "days": 5, **RANGE}),
    ("backtest", {"stock_code": "600000.SH", "strategy": "momentum", **RANGE}),
    ("training", {"kind": "train", "model": "ridge", "codes": ["000001.SZ", "600000.SH"],
                  **RANGE}),
    ("data", {"kind": "features", "codes": ["000001.SZ"], **RANGE}),
]


def test_every_built_in_family_reproduces_its_result(make_service: Any) -> None:
    service = make_service(task_types={name: TaskTypeSettings(workers=1)
                                       for name, _ in FAMILIES})
    tm = TaskManager(service)
    # (the data family's features read the owner's bar store: a sync fills it first; a
    # sync itself is incremental, so a second one writes nothing new, and says so)
    synced = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="sync", task_type="data", parameters={"kind": "sync", "codes": ["000001.SZ"],
                                                   **RANGE})).id, timeout_s=300)
    assert synced.status is TaskStatus.COMPLETED, synced.error
    for task_type, parameters in FAMILIES:
        # Given a completed task of each family
        done = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
            name=task_type, task_type=task_type, parameters=parameters)).id, timeout_s=300)
        assert done.status is TaskStatus.COMPLETED, done.error
        # When it is run again on the same inputs
        verdict = tm.rerun_sync(done.id, timeout_s=300)
        # Then its result is given again (the training's new model version aside)
        print(task_type, verdict.text())
        assert verdict.reproduced, verdict.text()
        assert verdict.changed == [] and verdict.rerun != done.id
        assert tm.get_task_sync(verdict.rerun).lineage["bars"], task_type  # it read bars


def _noisy(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"draw": random.random(), "label": "noisy"}


def _coded(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"x": 1}


def _recoded(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"x": 2}


def test_a_result_not_given_again_shows_the_difference_and_what_moved(
        make_service: Any) -> None:
    service = make_service()
    register_task_type("noisy", _noisy, workers=1, runtime=service)
    register_task_type("coded", _coded, workers=1, runtime=service)
    tm = TaskManager(service)
    # A handler that draws without a seed: the result differs, no input moved
    noisy = tm.wait_sync(tm.submit_sync(TaskCreateRequest(name="n", task_type="noisy")).id,
                         timeout_s=60)
    verdict = tm.rerun_sync(noisy.id, timeout_s=60)
    assert not verdict.reproduced and verdict.changed == []
    assert [d.split(":")[0] for d in verdict.differences] == ["result.draw"]
    assert "not deterministic" in verdict.text()
    # A handler whose code changed between the runs: the difference, and "code"
    coded = tm.wait_sync(tm.submit_sync(TaskCreateRequest(name="c", task_type="coded")).id,
                         timeout_s=60)
    register_task_type("coded", _recoded, workers=1, runtime=service)
    verdict = tm.rerun_sync(coded.id, timeout_s=60)
    assert not verdict.reproduced and verdict.differences == ["result.x: 1 != 2"]
    assert verdict.changed == ["code"]


def test_a_rerun_over_http_is_the_owners_and_verified_once_finished(api: Any) -> None:
    with httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice, \
            httpx.Client(base_url=api.url, headers=auth("bob"), timeout=60) as bob:
        task = alice.post("/tasks", json={"name": "s", "task_type": "sleepy",
                                          "parameters": {"seconds": 0.2}}).json()
        wait_for(lambda: alice.get(f"/tasks/{task['id']}").json()["status"] == "COMPLETED",
                 timeout_s=60)
        # Bob can neither re-run alice's task nor compare against it
        assert bob.post(f"/tasks/{task['id']}/rerun").status_code == 404
        rerun = alice.post(f"/tasks/{task['id']}/rerun")
        assert rerun.status_code == 201, rerun.text
        again = rerun.json()
        assert again["owner"] == "alice" and again["parameters"]["seconds"] == 0.2
        assert bob.get(f"/tasks/{again['id']}/verify",
                       params={"of": task["id"]}).status_code == 404
        # A task not completed cannot be the original; junk ids are 404, never 5xx
        assert alice.get(f"/tasks/{task['id']}/verify",
                         params={"of": "no-such-task"}).status_code == 404
        assert alice.get(f"/tasks/{task['id']}/verify").status_code == 422
        wait_for(lambda: alice.get(f"/tasks/{again['id']}").json()["status"] == "COMPLETED",
                 timeout_s=60)
        verdict = alice.get(f"/tasks/{again['id']}/verify", params={"of": task["id"]})
        assert verdict.status_code == 200, verdict.text
        body = verdict.json()
        # (sleepy returns when it started: the one field a re-run changes, and no input)
        assert body["original"] == task["id"] and body["rerun"] == again["id"], body
        assert [d.split(":")[0] for d in body["differences"]] == ["result.started"], body
        assert body["reproduced"] is False and body["changed"] == [], body
        # and a running or failed original is refused with 409, naming why
        running = alice.post("/tasks", json={"name": "s", "task_type": "sleepy",
                                             "parameters": {"seconds": 30}}).json()
        refused = alice.post(f"/tasks/{running['id']}/rerun")
        assert refused.status_code == 409 and "only a COMPLETED task" in refused.text
        alice.post(f"/tasks/{running['id']}/cancel")
