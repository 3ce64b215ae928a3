"""The result cache: a task whose inputs equal a finished task's takes its result at once,
``cached_from`` naming it and no executor running; a change of code or data is a miss, and
one owner's results never serve another's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from raytasks import TaskCreateRequest, TaskManager, TaskStatus, register_task_type
from raytasks.context import TaskExecutionContext
from raytasks.settings import TaskTypeSettings
from tests.conftest import wait_for
from tests.httpserver import auth
from tests.ray.test_cli import _run


class Doubling(BaseModel):
    x: int
    log: str  # where each run appends a line (the test's own directory)


def doubled(params: Doubling, ctx: TaskExecutionContext) -> dict[str, Any]:
    with open(params.log, "a") as fh:
        fh.write(f"{ctx.task_id} {ctx.cache_dir}\n")
    return {"value": params.x * 2, "cache_dir": str(ctx.cache_dir)}


def tripled(params: Doubling, ctx: TaskExecutionContext) -> dict[str, Any]:
    with open(params.log, "a") as fh:
        fh.write(f"{ctx.task_id} {ctx.cache_dir}\n")
    return {"value": params.x * 3, "cache_dir": str(ctx.cache_dir)}


def _runs(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_a_hit_runs_nothing_and_a_code_change_is_a_miss(make_service: Any,
                                                       tmp_path: Path) -> None:
    # Given a registered type whose handler notes every run in a file
    service = make_service()
    tm = TaskManager(service)
    register_task_type("twice", doubled, params_model=Doubling, workers=1, runtime=service)
    log = tmp_path / "runs.log"
    params = {"x": 21, "log": str(log)}

    def run(cache: bool | None = True, **more: Any) -> Any:
        task = tm.submit_sync(TaskCreateRequest(name="c", task_type="twice", parameters=params,
                                                cache=cache, **more))
        done = tm.wait_sync(task.id, timeout_s=120)
        assert done.status is TaskStatus.COMPLETED, done.error
        return done

    # When it runs once with cache on, then again with the same parameters
    first = run()
    started = time.perf_counter()
    second = run()
    hit_s = time.perf_counter() - started
    print(f"\ncache hit: submit to result in {hit_s * 1000:.1f} ms")
    # Then the second took the first's result: no executor ran it, no attempt exists
    assert first.cached_from is None and first.result["value"] == 42
    assert second.cached_from == first.id and second.result == first.result
    assert second.lineage == first.lineage
    assert _runs(log) == [first.id]
    assert tm.attempts_sync(second.id) == []
    shown = _run(service, "show", second.id)
    assert f"cached    the result of {first.id} (nothing ran)" in shown.stdout, shown.stdout
    # and the run of a task that takes cached results had its owner's cache directory
    assert first.result["cache_dir"] == str(service.settings.data_dir / "cache" / "shared")
    # and a task without cache runs, so does one with another parameter
    assert run(cache=None).cached_from is None and run(cache=False).cached_from is None
    other = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="c", task_type="twice", parameters={**params, "x": 1}, cache=True)).id, 120)
    assert other.cached_from is None and other.result["value"] == 2
    assert len(_runs(log)) == 4

    # When the type's code changes (the same name, another handler)
    register_task_type("twice", tripled, params_model=Doubling, workers=1, runtime=service)
    changed = run()
    # Then the cache misses, and the new code's result is cached in turn
    assert changed.cached_from is None and changed.result["value"] == 63
    assert run().cached_from == changed.id
    assert len(_runs(log)) == 5


def test_a_data_sync_that_changes_the_bars_read_is_a_miss(make_service: Any) -> None:
    # Given a bar store synced from the synthetic source through June
    service = make_service(task_types={"data": TaskTypeSettings(workers=1)})
    tm = TaskManager(service)

    def data(cache: bool | None = None, **params: Any) -> Any:
        task = tm.submit_sync(TaskCreateRequest(name="d", task_type="data", parameters={
            "codes": ["000001.SZ", "600000.SH"], **params}, cache=cache))
        done = tm.wait_sync(task.id, timeout_s=120)
        assert done.status is TaskStatus.COMPLETED, done.error
        return done

    data(kind="sync", start="2022-01-04", end="2022-06-30")
    year = {"kind": "validate", "start": "2022-01-04", "end": "2022-12-30"}
    # When the year's bars are validated with cache on, twice
    started = time.perf_counter()
    ran = data(cache=True, **year)
    run_s = time.perf_counter() - started
    hits = []
    for _ in range(2):
        started = time.perf_counter()
        hit = data(cache=True, **year)
        hits.append(time.perf_counter() - started)
        # Then the second and later are hits
        assert hit.cached_from == ran.id and hit.result == ran.result
    print(f"\nvalidate, run: {run_s * 1000:.0f} ms; cache hits: "
          f"{', '.join(f'{h * 1000:.0f}' for h in hits)} ms (submit to result; the first "
          "check of a manager process imports pandas)")
    # When a sync adds the second half of the year to the store
    data(kind="sync", start="2022-01-04", end="2022-12-30")
    again = data(cache=True, **year)
    # Then the bars read changed: a miss, which runs and reads the whole year
    assert again.cached_from is None
    before = ran.lineage["bars"]["store:market/000001.SZ"]
    after = again.lineage["bars"]["store:market/000001.SZ"]
    assert after["rows"] > before["rows"] and after["sha256"] != before["sha256"]
    assert data(cache=True, **year).cached_from == again.id


def test_a_cached_sweep_answers_in_a_small_part_of_its_run_time(make_service: Any) -> None:
    # Given a grid search of 150 SMA pairs over four years of bars (600 pairs: a 20.6 s run
    # against a 27 ms hit, 757x, on this 2-core machine)
    service = make_service(task_types={"backtest": TaskTypeSettings(workers=1)})
    tm = TaskManager(service)
    params = {"kind": "optimize", "stock_code": "000001.SZ", "start": "2019-01-02",
              "end": "2022-12-30", "fast_values": list(range(2, 17)),
              "slow_values": list(range(40, 120, 8)), "chunks": 2}
    timings, done = [], []
    for _ in range(2):
        started = time.perf_counter()
        task = tm.submit_sync(TaskCreateRequest(name="s", task_type="backtest",
                                                parameters=params, cache=True))
        done.append(tm.wait_sync(task.id, timeout_s=300))
        timings.append(time.perf_counter() - started)
    ran, hit = done
    assert ran.status is TaskStatus.COMPLETED and ran.result["combinations"] == 150, ran.error
    # Then the second is the first's result, in a small part of the time
    assert hit.cached_from == ran.id and hit.result == ran.result
    print(f"\n150-pair sweep: run {timings[0]:.2f} s, cache hit {timings[1] * 1000:.0f} ms "
          f"({timings[0] / timings[1]:.0f}x)")
    assert timings[1] < timings[0]


def test_owners_never_share_cached_results(api: Any, tmp_path: Path) -> None:
    # Given alice's finished task, run with cache on over HTTP
    body = {"name": "n", "task_type": "sleepy", "cache": True,
            "parameters": {"seconds": 0, "marker_dir": str(tmp_path)}}
    with httpx.Client(base_url=api.url) as c:
        def done(who: str, **more: Any) -> dict[str, Any]:
            made = c.post("/tasks", json={**body, **more}, headers=auth(who))
            assert made.status_code == 201, made.text
            return wait_for(lambda: (t := c.get(f"/tasks/{made.json()['id']}",
                                                headers=auth(who)).json())["status"]
                            == "COMPLETED" and t, what=f"{who}'s task")

        first = done("alice")
        # When alice sends it again, and bob sends the same
        mine, bobs = done("alice"), done("bob")
        # Then alice's second is served from her first; bob's runs (his marker file is there)
        assert mine["cached_from"] == first["id"] and mine["result"] == first["result"]
        assert not (tmp_path / f"{mine['id']}.starts").exists()
        assert bobs["cached_from"] is None and (tmp_path / f"{bobs['id']}.starts").exists()
        assert c.get(f"/tasks/{mine['id']}/attempts", headers=auth("alice")).json() == []
        # and a cache flag that is not a boolean is a clear 422
        refused = c.post("/tasks", json={**body, "cache": [1]}, headers=auth("alice"))
        assert refused.status_code == 422 and "cache" in refused.text
