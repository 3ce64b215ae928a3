"""CPU, measured, attacked over HTTP as a token holder would: work units weigh what a fit
costs, a task past its own CPU limit is stopped, and an owner's CPU of the day is held at
the lease while another owner's work goes on."""

from __future__ import annotations

from typing import Any

import httpx

from raytasks.settings import QuotaSettings, TaskTypeSettings
from tests.conftest import wait_for
from tests.httpserver import auth

RANGE = {"start": "2021-01-04", "end": "2023-12-29"}
CODES = [f"{600000 + i:06d}.SH" for i in range(20)]


def _status(c: httpx.Client, task_id: str) -> dict[str, Any]:
    return dict(c.get(f"/tasks/{task_id}").json())


def test_a_forest_on_twenty_stocks_is_weighed_as_the_work_it_is(make_api: Any) -> None:
    # Given a ceiling of 200,000 work units per task (about 20 CPU seconds here)
    api = make_api(sleepy_workers=0, quotas={"*": QuotaSettings(max_work_units=200_000)},
                   task_types={"training": TaskTypeSettings(workers=0)})
    train = {"name": "t", "task_type": "training",
             "parameters": {"kind": "train", "codes": CODES, **RANGE}}
    with httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice:
        # When alice asks for a random forest on 20 stocks over three years (it was counted
        # one unit per row: 14,700, and ran for minutes)
        forest = alice.post("/tasks", json={**train, "parameters": {
            **train["parameters"], "model": "random_forest"}})
        ridge = alice.post("/tasks", json={**train, "parameters": {
            **train["parameters"], "model": "ridge"}})
    # Then the forest is refused at the ceiling, naming it, and the same ridge fit is not
    assert forest.status_code == 422, forest.text
    assert "max_work_units=200,000" in forest.text
    assert ridge.status_code == 201, ridge.text


def test_cpu_past_a_limit_stops_the_task_and_the_owners_day_is_held(make_api: Any) -> None:
    # Given bob may use 0.3 CPU seconds a day, and alice is not limited
    api = make_api(sleepy_workers=1, quotas={"*": QuotaSettings(),
                                             "bob": QuotaSettings(max_cpu_s_per_day=0.3)})
    spin = {"name": "spin", "task_type": "sleepy",
            "parameters": {"forever": True, "cooperative": False}}
    with httpx.Client(base_url=api.url, headers=auth("bob"), timeout=60) as bob, \
            httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice:
        # When bob's task spins the CPU with a limit of half a second of its own
        burned = bob.post("/tasks", json={**spin, "max_cpu_s": 0.5, "max_retries": 0}).json()
        ended = wait_for(lambda: (t := _status(bob, burned["id"]))["status"] == "FAILED"
                         and t, timeout_s=60, what="the spinning task to be stopped")
        # Then it was stopped as a timeout is, saying why, and shows what it used
        assert ended["error"]["reason"] == "cpu_limit", ended["error"]
        assert ended["cpu_s"] >= 0.5 and ended["peak_rss_bytes"] > 0
        # and bob's next task does not start today, while alice's runs
        later = bob.post("/tasks", json={**spin, "parameters": {"seconds": 0}}).json()
        hers = alice.post("/tasks", json={**spin, "parameters": {"seconds": 0}}).json()
        wait_for(lambda: _status(alice, hers["id"])["status"] == "COMPLETED",
                 what="alice's task")
        assert _status(bob, later["id"])["status"] == "PENDING"
        # and the CPU is counted by owner in the metrics
        metrics = wait_for(lambda: (m := alice.get("/metrics").text)
                           and 'owner="bob"' in m and m, what="bob's CPU in the metrics")
        line = next(row for row in metrics.splitlines()
                    if row.startswith("raytasks_task_cpu_seconds_total") and 'owner="bob"' in row)
        assert float(line.split()[-1]) >= 0.5


def test_a_cpu_limit_is_a_positive_number_of_seconds(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url, headers=auth("alice"), timeout=60) as alice:
        for bad in (-1, 0, 1e30, "1; DROP TABLE", [1], {"$gt": 0}):
            r = alice.post("/tasks", json={"name": "s", "task_type": "sleepy",
                                           "max_cpu_s": bad})
            assert r.status_code == 422, (bad, r.text)
            assert any(e["field"] == "max_cpu_s" for e in r.json()["errors"]), r.text
