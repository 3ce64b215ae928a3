"""Executor pools that follow their queue: none while idle, one within a poll and a worker
start of the first task, up to the maximum under a backlog, and back to none when idle again,
retiring executors only once what they ran is reported."""

from __future__ import annotations

from typing import Any

import ray

from raytasks import TaskCreateRequest, TaskExecutionEngine, TaskManager, register_task_type
from raytasks.runtime import ENGINE
from tests.conftest import wait_for
from tests.helpers import SleepParams, sleepy


def _pool(service: Any) -> dict[str, Any]:
    info: dict[str, Any] = ray.get(service.handle(ENGINE).pools_info.remote())["sleepy"]
    return info


def test_a_pool_grows_with_its_queue_and_shrinks_to_none_when_idle(make_service: Any) -> None:
    # Given pools that scale between 0 and 2 with a 1.5 s idle timeout
    # (and no warm executors kept idle)
    service = make_service(workers_per_type=None, min_workers_per_type=0,
                           max_workers_per_type=2, idle_timeout_s=1.5,
                           warm_workers_per_type=0)
    register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=service)
    tm = TaskManager(service)
    # Then an idle raytasks holds no executor of any type
    assert _pool(service)["live"] == 0
    assert ray.get(service.handle(ENGINE).stats.remote()) == []
    # When the first task arrives, then one executor starts and runs it
    first = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="first", task_type="sleepy", parameters={"seconds": 0.1})).id, timeout_s=60)
    assert first.status.value == "COMPLETED" and first.started_at is not None
    first_wait = (first.started_at - first.created_at).total_seconds()
    assert _pool(service)["resizes"][0]["action"] == "grow"
    assert first_wait < 10  # a 0.5 s poll plus one worker process start (~1.5 s here)
    # When a backlog arrives, then the pool grows to its maximum and no further
    backlog = tm.submit_many_sync([TaskCreateRequest(
        name=f"b{i}", task_type="sleepy", parameters={"seconds": 1.5}) for i in range(5)])
    wait_for(lambda: _pool(service)["live"] == 2, timeout_s=30, what="two executors")
    done = tm.wait_all_sync([t.id for t in backlog], timeout_s=120)
    assert {t.status.value for t in done} == {"COMPLETED"} and {t.attempt for t in done} == {0}
    assert max(r["size"] for r in _pool(service)["resizes"]) == 2
    # When it is idle for the timeout, then it retires every executor and ends them
    wait_for(lambda: _pool(service)["live"] == 0 and _pool(service)["retiring"] == 0,
             timeout_s=30, what="the pool to shrink to none")
    assert ray.get(service.handle(ENGINE).stats.remote()) == []
    assert _pool(service)["resizes"][-1]["size"] == 0
    # and the retired executors' work was all reported: nothing was retried or lost
    assert [tm.get_task_sync(t.id).attempt for t in backlog] == [0] * 5
    print(f"first task of an empty pool waited {first_wait:.2f} s (poll 0.5 s + a worker)")


def test_a_restarted_engine_adopts_the_executors_it_left(make_service: Any) -> None:
    # Given a pool of two executors
    service = make_service()
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=2, runtime=service)
    engine = TaskExecutionEngine(service)

    def pids() -> list[int] | None:
        try:
            states = engine.executors_sync()
        except ray.exceptions.RayActorError:  # restarting
            return None
        if any("pid" not in e for e in states):  # one not answering within 3 s yet
            return None
        return sorted(e["pid"] for e in states)

    before = wait_for(lambda: (found := pids()) is not None and len(found) == 2 and found,
                      what="two executors")
    # When the engine's process dies and Ray restarts it
    ray.kill(service.handle(ENGINE), no_restart=False)
    # Then it takes back the same two processes (found by name), starts none, and they run work
    wait_for(lambda: pids() == before, timeout_s=60,
             what="the restarted engine to adopt both executors")
    tm = TaskManager(service)
    done = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="after", task_type="sleepy", parameters={"seconds": 0.0})).id, timeout_s=60)
    assert done.status.value == "COMPLETED"
    wait_for(lambda: pids() == before, timeout_s=30, what="the same two executors")
