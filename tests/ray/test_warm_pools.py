"""Warm pools: a pool keeps ``warm_workers`` idle executors ready above its busy ones (never
above ``max_workers``), so a burst starts on an executor that is already there; idle
retirement keeps that headroom, and ``warm_workers=0`` is the pool that holds nothing idle.

Holding is shown without waiting on a clock: the engine's ``scale_once`` takes ``now``, so a
test runs two rounds a long idle time apart, and a pool that would shrink does so at once.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from raytasks import TaskCreateRequest, TaskExecutionEngine, TaskManager, register_task_type
from raytasks.models import TaskStatus
from raytasks.runtime import ENGINE
from raytasks.settings import TaskTypeSettings
from tests.conftest import wait_for
from tests.helpers import SleepParams, sleepy

BUILT_IN = ("prediction", "backtest", "training", "data")


def _pools(service: Any) -> dict[str, dict[str, Any]]:
    pools: dict[str, dict[str, Any]] = ray.get(service.handle(ENGINE).pools_info.remote())
    return pools


def _pool(service: Any, task_type: str = "sleepy") -> dict[str, Any]:
    return _pools(service)[task_type]


def _idle_a_long_time(service: Any) -> None:
    """Two scaling rounds a thousand seconds apart, far past any idle timeout here: a pool
    above what it should hold shrinks in the second."""
    later = time.monotonic() + 1000.0
    engine = service.handle(ENGINE)
    ray.get(engine.scale_once.remote(now=later))
    ray.get(engine.scale_once.remote(now=later + 1000.0))


def _settled(service: Any, size: int) -> bool:
    pool = _pool(service)
    return pool["live"] == size and pool["placed"] == size and pool["retiring"] == 0


def _held(n: int) -> list[TaskCreateRequest]:
    """Tasks that run until they are cancelled."""
    return [TaskCreateRequest(name=f"held-{i}", task_type="sleepy",
                              parameters={"forever": True}) for i in range(n)]


def _running_on(service: Any, task_id: str) -> str | None:
    for state in TaskExecutionEngine(service).executors_sync():
        if state.get("current") == task_id:
            return str(state["executor_id"])
    return None


def test_a_warm_pool_holds_its_idle_executor_and_refills_after_a_burst(
        make_service: Any) -> None:
    # Given pools that scale from none to three with a 1 s idle timeout, sleepy keeping one
    # executor warm
    service = make_service(workers_per_type=None, warm_workers_per_type=0,
                           max_workers_per_type=3, idle_timeout_s=1.0,
                           task_types={"sleepy": TaskTypeSettings(warm_workers=1)})
    register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=service)
    tm = TaskManager(service)
    # Then before any task its pool holds one idle executor, and keeps it however long idle
    wait_for(lambda: _settled(service, 1), what="the warm executor")
    _idle_a_long_time(service)
    assert _settled(service, 1)
    [warm] = [s["executor_id"] for s in TaskExecutionEngine(service).executors_sync()]
    # When a burst of two tasks arrives
    first, second = tm.submit_many_sync(_held(2))
    # Then one of them runs on the executor that was waiting for it
    wait_for(lambda: warm in {_running_on(service, first.id), _running_on(service, second.id)},
             what="a task of the burst on the warm executor")
    # and the pool refills its headroom: two busy and one idle
    wait_for(lambda: _settled(service, 3) and all(
        tm.get_task_sync(t.id).status is TaskStatus.RUNNING for t in (first, second)),
             what="both tasks running and one executor idle")
    _idle_a_long_time(service)
    assert _settled(service, 3)
    # When one task ends, then idle retirement takes the pool to its busy one plus the warm
    # one, and no lower however long it stays so
    tm.cancel_task_sync(first.id)
    wait_for(lambda: _settled(service, 2), timeout_s=30, what="the pool to shrink to two")
    _idle_a_long_time(service)
    assert _settled(service, 2)
    assert _running_on(service, second.id) is not None
    # When the other ends too, then the pool shrinks to its warm executor and holds it
    tm.cancel_task_sync(second.id)
    wait_for(lambda: _settled(service, 1), timeout_s=30, what="the pool to shrink to one")
    _idle_a_long_time(service)
    assert _settled(service, 1)
    assert [r["action"] for r in _pool(service)["resizes"]][-1] == "shrink"
    assert min(r["size"] for r in _pool(service)["resizes"]) == 1


def test_warm_workers_above_max_workers_are_capped_at_max_workers(make_service: Any) -> None:
    # Given a type that asks for ten warm executors in a pool of at most two
    service = make_service(workers_per_type=None, warm_workers_per_type=0,
                           task_types={"sleepy": TaskTypeSettings(max_workers=2,
                                                                  warm_workers=10)})
    assert service.settings.for_type("sleepy").warm_workers == 2
    register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=service)
    tm = TaskManager(service)
    # Then its pool comes up with two, its maximum
    wait_for(lambda: _settled(service, 2), what="two warm executors")
    assert (_pool(service)["warm"], _pool(service)["max"]) == (2, 2)
    # When more work arrives than the pool may run at once, then it runs on those two
    done = tm.wait_all_sync([t.id for t in tm.submit_many_sync([TaskCreateRequest(
        name=f"s{i}", task_type="sleepy", parameters={"seconds": 0.2}) for i in range(4)])],
        timeout_s=120)
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    # and the pool never held more than two, nor fewer once idle
    _idle_a_long_time(service)
    assert _settled(service, 2)
    assert max(r["size"] for r in _pool(service)["resizes"]) == 2


def test_no_warm_workers_keeps_an_idle_raytasks_without_executor_processes(
        make_service: Any) -> None:
    # Given pools from none to two with no warm executors, the built-in types' too
    service = make_service(workers_per_type=None, warm_workers_per_type=0,
                           max_workers_per_type=2, idle_timeout_s=1.0)
    register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=service)
    tm = TaskManager(service)
    engine = service.handle(ENGINE)
    # Then an idle raytasks holds no executor process of any type
    assert {t: p["live"] for t, p in _pools(service).items()} == \
        dict.fromkeys([*BUILT_IN, "sleepy"], 0)
    assert ray.get(engine.stats.remote()) == []
    # When a task runs, then the pool grows for it and, idle again, shrinks to none
    done = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="one", task_type="sleepy", parameters={"seconds": 0.1})).id, timeout_s=60)
    assert done.status is TaskStatus.COMPLETED
    assert _pool(service)["resizes"][0]["action"] == "grow"
    wait_for(lambda: _settled(service, 0), timeout_s=30, what="the pool to shrink to none")
    _idle_a_long_time(service)
    assert ray.get(engine.stats.remote()) == []


def test_by_default_only_the_prediction_pool_starts_warm(make_service: Any) -> None:
    # Given raytasks started with the default warm executors (and autoscaled pools)
    service = make_service(workers_per_type=None)
    # Then the built-in prediction pool comes up with one executor before any task arrives,
    # and the longer-running types with none
    wait_for(lambda: _pool(service, "prediction")["placed"] == 1,
             what="the warm prediction executor")
    pools = _pools(service)
    assert {t: pools[t]["live"] for t in BUILT_IN} == \
        {"prediction": 1, "backtest": 0, "training": 0, "data": 0}
    assert [s["task_type"] for s in TaskExecutionEngine(service).executors_sync()] == \
        ["prediction"]


def test_a_task_waiting_for_its_executor_to_start_is_explained_so(make_service: Any) -> None:
    # Given a type whose executors need a resource no node has, so one never gets placed
    service = make_service(workers_per_type=None, warm_workers_per_type=0, task_types={
        "sleepy": TaskTypeSettings(max_workers=1, resources={"raytasks-test-absent": 1})})
    register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=service)
    tm = TaskManager(service)
    # When a task of it is submitted
    task = tm.submit_sync(TaskCreateRequest(name="waits", task_type="sleepy",
                                            parameters={"seconds": 0.0}))
    # Then its pool starts an executor that stays starting, and the task's explanation says
    # it waits for that executor to start
    wait_for(lambda: _pool(service)["starting"] == 1, what="an executor starting")
    def starting_said() -> Any:
        said = tm.explain_sync(task.id)
        return said if "executors_starting" in said.causes else None

    said = wait_for(starting_said, what="the wait explained by a starting executor")
    assert said.executors["starting"] == 1 and said.status is TaskStatus.PENDING
    assert any("starting" in reason for reason in said.reasons)
    tm.cancel_task_sync(task.id)


def test_a_restarted_engine_starts_the_warm_executors_it_finds_missing(
        make_service: Any) -> None:
    # Given a warm sleepy pool whose one executor is gone (ended, not restarted)
    service = make_service(workers_per_type=None, warm_workers_per_type=0,
                           task_types={"sleepy": TaskTypeSettings(warm_workers=1)})
    register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=service)
    wait_for(lambda: _settled(service, 1), what="the warm executor")
    namespace = service.settings.namespace
    ray.kill(ray.get_actor("executor:sleepy:0", namespace=namespace), no_restart=True)
    wait_for(lambda: "executor:sleepy:0" not in {
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace}, what="the executor to end")
    # When the engine's process dies and Ray restarts it
    ray.kill(service.handle(ENGINE), no_restart=False)

    def pool() -> dict[str, Any] | None:
        try:
            return _pools(service).get("sleepy")
        except ray.exceptions.RayActorError:  # restarting
            return None

    # Then the new engine, finding no executor to adopt, starts the warm one again
    wait_for(lambda: (p := pool()) is not None and p["placed"] == 1 and p["live"] == 1,
             timeout_s=60, what="a warm executor from the restarted engine")
