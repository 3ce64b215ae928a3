"""The task lifecycle on a real local Ray cluster: priorities, retries, timeouts, cancels, deps."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from raytasks import (
    ProgressTracker,
    QueueFullError,
    TaskCreateRequest,
    TaskExecutionEngine,
    TaskManager,
    TaskNotificationService,
    TaskPriority,
    TaskQueueManager,
    TaskStatus,
    register_task_type,
)
from raytasks.messages import Report, ReportAnswer
from tests.conftest import answering_executors, wait_for
from tests.helpers import SleepParams, sleepy, starts


def _req(seconds: float = 0.0, priority: TaskPriority = TaskPriority.MEDIUM,
         task_type: str = "sleepy", **params: Any) -> TaskCreateRequest:
    extra = {k: params.pop(k) for k in ("timeout_s", "max_retries", "depends_on")
             if k in params}
    return TaskCreateRequest(name=f"sleep {seconds}", task_type=task_type, priority=priority,
                             parameters={"seconds": seconds, **params}, **extra)


def _sleepy(service: Any, workers: int = 1, **kw: Any) -> None:
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=workers,
                       runtime=service, **kw)


def _events(service: Any, task_id: str) -> list[Any]:
    notifier = TaskNotificationService(service)
    return [e for e in notifier.events_sync(0, timeout_s=0) if e.task_id == task_id]


def test_public_api_snippet_runs_as_written(make_service: Any) -> None:
    """Given the service with default pools, when the DESIGN.md snippet runs, it completes."""
    import asyncio

    make_service(workers_per_type=1)

    async def snippet() -> tuple[Any, Any]:
        task_manager = TaskManager()
        task = await task_manager.create_task(TaskCreateRequest(
            name="股票预测任务", task_type="prediction",
            parameters={"stock_code": "000001.SZ", "days": 5}))
        await TaskQueueManager().submit_task(task.id, priority=TaskPriority.HIGH)
        result = await TaskExecutionEngine().execute_task(task.id)
        progress = await ProgressTracker().get_progress(task.id)
        return result, progress

    result, progress = asyncio.run(snippet())
    assert result["kind"] == "price" and result["stock_code"] == "000001.SZ"
    assert result["horizon_days"] == 5 and result["predicted_price"] > 0
    assert progress.percentage == 1.0 and progress.status is TaskStatus.COMPLETED


def test_high_overtakes_low_on_a_busy_system(service: Any) -> None:
    # Given one executor kept busy by a blocker
    _sleepy(service)
    tm = TaskManager(service)
    blocker = tm.submit_sync(_req(1.0))
    wait_for(lambda: tm.get_task_sync(blocker.id).status is TaskStatus.RUNNING)
    # When LOW work is queued before HIGH work
    lows = tm.submit_many_sync([_req(0.02, TaskPriority.LOW) for _ in range(5)])
    highs = tm.submit_many_sync([_req(0.02, TaskPriority.HIGH) for _ in range(5)])
    done = tm.wait_all_sync([t.id for t in lows + highs], timeout_s=60)
    # Then every HIGH task started before any LOW task
    by_id = {t.id: t for t in done}
    last_high = max(by_id[t.id].started_at for t in highs)  # type: ignore[type-var]
    first_low = min(by_id[t.id].started_at for t in lows)  # type: ignore[type-var]
    assert last_high < first_low
    assert all(t.status is TaskStatus.COMPLETED for t in done)


def test_low_is_not_starved_by_a_stream_of_high(make_service: Any) -> None:
    # Given aging of one priority level per 0.3 s and a steady stream of HIGH work
    service = make_service(aging_interval_s=0.3)
    _sleepy(service)
    tm = TaskManager(service)
    low = tm.submit_sync(_req(0.05, TaskPriority.LOW))
    highs: list[Any] = []

    def feed() -> None:
        for _ in range(50):  # 20/s offered against ~15/s served: HIGH work piles up
            highs.append(tm.submit_sync(_req(0.05, TaskPriority.HIGH)))
            time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    feeder.start()
    # When the LOW task ends, HIGH tasks are still waiting: it did not wait for the stream
    low_done = tm.wait_sync(low.id, timeout_s=60)
    feeder.join()
    done = tm.wait_all_sync([t.id for t in highs], timeout_s=60)
    later_highs = [t for t in done if t.started_at > low_done.finished_at]  # type: ignore[operator]
    assert low_done.status is TaskStatus.COMPLETED
    assert len(later_highs) >= 5, "LOW ran only after the HIGH stream drained"


def test_retry_with_backoff_then_success(service: Any, tmp_path: Path) -> None:
    # Given a handler that fails on its first two attempts
    _sleepy(service)
    tm = TaskManager(service)
    task = tm.submit_sync(_req(0.0, marker_dir=str(tmp_path), fail_attempts=2, max_retries=3))
    # When it runs
    done = tm.wait_sync(task.id, timeout_s=60)
    # Then it completes on attempt 2, after two backoff delays
    assert done.status is TaskStatus.COMPLETED and done.attempt == 2
    assert starts(tmp_path, task.id) == [0, 1, 2]
    times = [float(line.split()[1])
             for line in (tmp_path / f"{task.id}.starts").read_text().splitlines()]
    # base 0.2 s, jitter 0.5: the delays before attempts 1 and 2 are >= 0.1 s and >= 0.2 s
    assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.2
    statuses = [e.status for e in _events(service, task.id) if e.kind == "status"]
    assert statuses == ["PENDING", "RUNNING", "PENDING", "RUNNING", "PENDING", "RUNNING",
                        "COMPLETED"]


def test_cpu_bound_task_times_out_and_the_pool_runs_the_next(service: Any) -> None:
    # Given a pool of one executor and a task that spins without looking at its context
    _sleepy(service)
    tm = TaskManager(service)
    engine = TaskExecutionEngine(service)
    [before] = answering_executors(engine, 1)
    spinner = tm.submit_sync(_req(forever=True, cooperative=False, timeout_s=2, max_retries=0))
    follower = tm.submit_sync(_req(0.0))
    # When the timeout passes
    started = time.monotonic()
    ended = tm.wait_sync(spinner.id, timeout_s=30)
    # Then it ends FAILED (timeout) within a few seconds and the next task still runs
    assert ended.status is TaskStatus.FAILED
    assert ended.error is not None and ended.error.reason == "timeout"
    assert time.monotonic() - started < 8
    assert tm.wait_sync(follower.id, timeout_s=30).status is TaskStatus.COMPLETED
    [after] = answering_executors(engine, 1)
    assert after["pid"] != before["pid"]


def test_cancel_pending_and_running(service: Any) -> None:
    _sleepy(service)
    tm = TaskManager(service)
    running = tm.submit_sync(_req(forever=True))
    pending = tm.submit_sync(_req(0.0))
    wait_for(lambda: tm.get_task_sync(running.id).status is TaskStatus.RUNNING)
    # When both are cancelled
    assert tm.cancel_task_sync(pending.id).status is TaskStatus.CANCELLED
    tm.cancel_task_sync(running.id)
    # Then the pending one never ran and the running one stopped cooperatively
    done = tm.wait_sync(running.id, timeout_s=10)
    assert done.status is TaskStatus.CANCELLED and done.error is not None
    assert done.error.reason == "cancelled"
    assert tm.get_task_sync(pending.id).started_at is None


def test_forced_cancel_stops_code_that_ignores_the_context(service: Any) -> None:
    _sleepy(service)
    tm = TaskManager(service)
    task = tm.submit_sync(_req(forever=True, cooperative=False, max_retries=0))
    wait_for(lambda: tm.get_task_sync(task.id).status is TaskStatus.RUNNING)
    tm.cancel_task_sync(task.id)
    done = tm.wait_sync(task.id, timeout_s=15)
    assert done.status is TaskStatus.CANCELLED
    assert tm.wait_sync(tm.submit_sync(_req(0.0)).id, timeout_s=30).status \
        is TaskStatus.COMPLETED


def test_killed_executor_reruns_the_task_exactly_once(service: Any, tmp_path: Path) -> None:
    # Given a task running on the only executor
    _sleepy(service)
    tm = TaskManager(service)
    task = tm.submit_sync(_req(1.5, marker_dir=str(tmp_path), max_retries=2))
    wait_for(lambda: starts(tmp_path, task.id) == [0], what="first attempt to start")
    first_token = tm.get_task_sync(task.id).lease_token
    # When its executor process is killed mid-task
    executor = ray.get_actor("executor:sleepy:0", namespace=service.settings.namespace)
    ray.kill(executor, no_restart=False)
    # Then the lease expires, the task runs again and completes once
    done = tm.wait_sync(task.id, timeout_s=60)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    assert starts(tmp_path, task.id) == [0, 1]
    completions = [e for e in _events(service, task.id) if e.kind == "status"
                   and e.status is TaskStatus.COMPLETED]
    assert len(completions) == 1
    # And a report from the stale attempt is rejected
    manager = service.handle("manager")
    answer = ray.get(manager.report.remote([Report(task.id, first_token, "completed",
                                                   result="1")]))
    assert answer == ReportAnswer(accepted=[], rejected=[task.id])
    assert tm.get_task_sync(task.id).result == done.result


def test_killed_manager_loses_no_acknowledged_task(service: Any) -> None:
    # Given acknowledged tasks, some running and most waiting
    _sleepy(service)
    tm = TaskManager(service)
    tasks = tm.submit_many_sync([_req(0.2) for _ in range(10)])
    wait_for(lambda: tm.get_task_sync(tasks[0].id).status is not TaskStatus.PENDING)
    # When the TaskManager actor is killed (and Ray restarts it)
    ray.kill(service.handle("manager"), no_restart=False)
    # Then every task is still there and all of them complete, each exactly once
    done = tm.wait_all_sync([t.id for t in tasks], timeout_s=90)
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 10
    for t in tasks:
        completions = [e for e in _events(service, t.id) if e.kind == "status"
                       and e.status is TaskStatus.COMPLETED]
        assert len(completions) == 1


def test_dependency_chain_runs_in_order_and_failure_cascades(service: Any) -> None:
    _sleepy(service, workers=2)
    tm = TaskManager(service)
    a = tm.submit_sync(_req(0.2))
    b = tm.submit_sync(_req(0.1, depends_on=[a.id]))
    c = tm.submit_sync(_req(0.0, depends_on=[b.id]))
    ta, tb, tc = tm.wait_all_sync([a.id, b.id, c.id], timeout_s=60)
    assert ta.finished_at <= tb.started_at and tb.finished_at <= tc.started_at  # type: ignore[operator]
    bad = tm.submit_sync(_req(0.0, fail_attempts=1, max_retries=0))
    child = tm.submit_sync(_req(0.0, depends_on=[bad.id]))
    ended = tm.wait_sync(child.id, timeout_s=30)
    assert ended.status is TaskStatus.FAILED and ended.error is not None
    assert ended.error.reason == "dependency" and ended.started_at is None


def test_full_queue_refuses_with_a_clear_error(make_service: Any) -> None:
    service = make_service(max_queue_size=3)
    _sleepy(service, workers=0)  # nothing drains the queue
    tm = TaskManager(service)
    tm.submit_many_sync([_req() for _ in range(3)])
    with pytest.raises(QueueFullError, match="queue 'default' is full"):
        tm.submit_sync(_req())
    assert tm.stats_sync()["queues"][0]["waiting"]["MEDIUM"] == 3


def test_progress_and_callbacks_reach_the_client(service: Any) -> None:
    _sleepy(service)
    tm = TaskManager(service)
    seen: list[Any] = []
    sub = TaskNotificationService(service).subscribe(seen.append)
    task = tm.submit_sync(_req(1.0))
    wait_for(lambda: ProgressTracker(service).get_progress_sync(task.id).percentage > 0.2,
             what="progress to move")
    tm.wait_sync(task.id, timeout_s=30)
    wait_for(lambda: any(e.kind == "status" and e.status is TaskStatus.COMPLETED
                         for e in seen), what="the completion callback")
    sub.close()
    mine = [e for e in seen if e.task_id == task.id]
    assert [e.status for e in mine if e.kind == "status"] == ["PENDING", "RUNNING", "COMPLETED"]
    assert any(e.kind == "progress" and 0 < e.percentage < 1 for e in mine)


def test_a_wait_that_gave_up_leaves_later_waits_their_tasks(service: Any) -> None:
    from raytasks import WaitTimeoutError

    _sleepy(service, workers=2)
    answering_executors(TaskExecutionEngine(service), 2)  # the waits below time tasks, not starts
    tm = TaskManager(service)
    # Given a wait that gave up while the client's stream was polling the manager
    long = tm.submit_sync(_req(4.0))
    with pytest.raises(WaitTimeoutError):
        tm.wait_sync(long.id, timeout_s=0.3)
    time.sleep(0.5)  # the stream has seen that nobody waits (its poll still open)
    # When tasks submitted after it (their submit put them in the stream) finish while
    # that poll is still open on the manager
    for _ in range(3):
        task = tm.submit_sync(_req(0.0))
        # Then each wait gets its task: the open poll took nothing a later one waits for
        assert tm.wait_sync(task.id, timeout_s=3).status is TaskStatus.COMPLETED
    assert tm.wait_sync(long.id, timeout_s=30).status is TaskStatus.COMPLETED


def test_large_results_are_stored_as_artifacts(service: Any) -> None:
    _sleepy(service)
    tm = TaskManager(service)
    task = tm.submit_sync(_req(0.0, size=200_000))
    done = tm.wait_sync(task.id, timeout_s=30)
    assert done.result_uri is not None and Path(done.result_uri).is_file()
    assert len(done.result["blob"]) == 200_000
    tm.delete_task_sync(task.id)
    assert not Path(done.result_uri).exists()


def test_invalid_input_is_refused_clearly_and_nothing_else_breaks(service: Any) -> None:
    from raytasks import (
        InvalidParametersError,
        InvalidTransitionError,
        PayloadTooLargeError,
        TaskNotFoundError,
        UnknownTaskTypeError,
    )

    _sleepy(service)
    tm = TaskManager(service)
    with pytest.raises(UnknownTaskTypeError, match="unknown task type 'forecast'"):
        tm.submit_sync(_req(task_type="forecast"))
    with pytest.raises(InvalidParametersError, match=r"parameters\.stock_code") as info:
        tm.submit_sync(TaskCreateRequest(name="p", task_type="prediction",
                                         parameters={"stock_code": "1.SZ"}))
    assert info.value.errors[0]["field"] == "parameters.stock_code"
    with pytest.raises(InvalidParametersError, match=r"parameters\.seconds"):
        tm.submit_sync(_req(seconds="soon"))  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLargeError):
        tm.submit_sync(_req(marker_dir="x" * 2_000_000))
    with pytest.raises(TaskNotFoundError, match="no task with id 'nope'"):
        tm.get_task_sync("nope")
    running = tm.submit_sync(_req(1.0))
    wait_for(lambda: tm.get_task_sync(running.id).status is TaskStatus.RUNNING)
    with pytest.raises(InvalidTransitionError, match="is RUNNING; it cannot become deleted"):
        tm.delete_task_sync(running.id)
    done = tm.wait_sync(running.id, timeout_s=30)
    with pytest.raises(InvalidTransitionError, match="is COMPLETED"):
        tm.retry_task_sync(done.id)
    assert tm.wait_sync(tm.submit_sync(_req(0.0)).id, timeout_s=30).status \
        is TaskStatus.COMPLETED
