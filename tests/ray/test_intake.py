"""The intake route on a real local Ray: a client commits its plain submits itself, and
the manager adopts each exactly once, whether the client's notice comes, comes late, comes
twice, or never comes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from raytasks import (
    QueueFullError,
    TaskManager,
    TaskStatus,
    register_task_type,
)
from raytasks.messages import IntakeGrant, NewTask
from raytasks.runtime import MANAGER
from raytasks.runtime.intake import rows_of
from raytasks.store import SqlTaskStore, WriteBatch
from tests.conftest import wait_for
from tests.helpers import SleepParams, sleepy, starts
from tests.ray.intake import intake_rows, sleep_request, statuses


def _sleepy(service: Any, workers: int = 1) -> None:
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=workers,
                       runtime=service)


def _unannounced(service: Any, count: int = 1, **params: Any) -> list[str]:
    """What a client leaves when it dies between its commit and its notice: tasks, their
    PENDING events and intake rows in the store, and no word to the manager."""
    grant: IntakeGrant = ray.get(service.handle(MANAGER).grant.remote("gone"))
    ids = [uuid.uuid4().hex for _ in range(count)]
    rows = rows_of([NewTask(i, "sleep", "sleepy", {"seconds": 0.0, **params}) for i in ids],
                 grant, time.time(), "gone")
    store = SqlTaskStore(grant.store_url)
    try:
        store.commit(WriteBatch(inserts=rows.tasks, events=rows.events, intake=rows.intake))
    finally:
        store.close()
    return ids


def test_a_plain_submit_is_committed_by_the_client_and_runs_once(make_service: Any,
                                                                 tmp_path: Path) -> None:
    service = make_service(executor_loan_s=0)  # lone tasks are queued, not lent
    _sleepy(service)
    tm = TaskManager(service)
    direct = service.session.intake
    # When plain tasks are submitted one by one
    tasks = [tm.submit_sync(sleep_request(marker_dir=str(tmp_path))) for _ in range(20)]
    # Then the client committed them itself, each ran once, and the stream tells each
    # task's life in order
    assert direct.committed == 20
    done = tm.wait_all_sync([t.id for t in tasks], timeout_s=60)
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    assert all(starts(tmp_path, t.id) == [0] for t in tasks)
    for task in tasks:
        assert statuses(service, task.id) == ["PENDING", "RUNNING", "COMPLETED"]
    wait_for(lambda: intake_rows(service) == [], what="the intake rows to be claimed")


@pytest.mark.parametrize("direct_intake", [True, False])
def test_the_stream_names_finished_tasks_and_a_client_with_the_store_reads_them(
        make_service: Any, direct_intake: bool) -> None:
    service = make_service(direct_intake=direct_intake, inline_result_max_bytes=1024)
    _sleepy(service, workers=2)
    tm = TaskManager(service)
    tm.wait_sync(tm.submit_sync(sleep_request()).id, timeout_s=30)  # this client waits
    read = service.session.read_here
    # When tasks submitted through the manager (one call) are waited for, two of them with
    # a result too large to keep inline (a file in their attempt's directory)
    tasks = tm.submit_many_sync([sleep_request(size=4096 if i < 2 else 0) for i in range(12)])
    done = tm.wait_all_sync([t.id for t in tasks], timeout_s=60)
    # Then a client that reaches the store read them there (the manager only named them),
    # one that does not was sent them, and either way each is the task as the manager
    # reads it, field by field, results from files included
    assert service.session.read_here - read == (12 if direct_intake else 0)
    assert [t.model_dump() for t in done] == \
        [tm.get_task_sync(t.id).model_dump() for t in tasks]
    assert [t.result["blob"] for t in done[:3]] == ["x" * 4096, "x" * 4096, ""]
    assert all(t.result_uri is not None for t in done[:2])


def test_a_task_whose_notice_never_came_is_adopted_by_the_sweep(service: Any) -> None:
    _sleepy(service)
    tm = TaskManager(service)
    # Given tasks a client committed and never announced (it died)
    ids = _unannounced(service, 3)
    # When nobody asks about them, the manager's sweep finds and runs them
    wait_for(lambda: all(tm.get_task_sync(i).status is TaskStatus.COMPLETED for i in ids),
             timeout_s=30, what="the sweep to adopt and run them")
    assert intake_rows(service) == []


def test_calls_made_before_the_notice_adopt_the_task_first(service: Any) -> None:
    _sleepy(service, workers=0)  # nothing runs: they stay PENDING
    tm = TaskManager(service)
    to_cancel, to_wait_on, depended_on = _unannounced(service, 3)
    # A cancel of a task the manager has not heard of cancels it (no "illegal transition")
    assert tm.cancel_task_sync(to_cancel).status is TaskStatus.CANCELLED
    # A task may depend on one the manager has not heard of: it waits for it
    child = tm.submit_sync(sleep_request(depends_on=[depended_on]))
    assert service.session.intake.committed == 0  # a task with dependencies: the manager's
    _sleepy(service, workers=1)
    # A wait on one the manager has not heard of waits for it to finish
    assert tm.wait_sync(to_wait_on, timeout_s=60).status is TaskStatus.COMPLETED
    assert tm.wait_sync(child.id, timeout_s=60).status is TaskStatus.COMPLETED
    assert tm.get_task_sync(to_cancel).status is TaskStatus.CANCELLED


def test_a_repeated_notice_never_brings_a_finished_task_back(service: Any,
                                                             tmp_path: Path) -> None:
    _sleepy(service)
    tm = TaskManager(service)
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path)))
    assert tm.wait_sync(task.id, timeout_s=60).status is TaskStatus.COMPLETED
    manager = service.handle(MANAGER)
    # When the notice comes again (Ray repeats a call after a manager restart)
    ray.get(manager.adopt.remote(service.session.intake.client, [task.id], None))
    time.sleep(0.5)
    # Then nothing runs again: the task is not in the manager's memory, it ran once
    assert ray.get(manager.stats.remote())["active"] == 0
    assert starts(tmp_path, task.id) == [0]
    assert tm.get_task_sync(task.id).status is TaskStatus.COMPLETED


def test_a_full_queue_refuses_whichever_way_tasks_come(make_service: Any) -> None:
    service = make_service(max_queue_size=40)
    _sleepy(service, workers=0)  # nothing drains the queue
    tm = TaskManager(service)
    # When a client submits one by one past the queue's size
    admitted = 0
    with pytest.raises(QueueFullError, match="queue 'default' is full"):
        for _ in range(41):
            tm.submit_sync(sleep_request())
            admitted += 1
    # Then it was refused at the size exactly: some tasks went through the client's own
    # commit (the room the manager granted it), the rest through the manager
    assert admitted == 40
    assert 0 < service.session.intake.committed < 40
    wait_for(lambda: tm.stats_sync()["queues"][0]["waiting"]["MEDIUM"] == 40,
             what="every admitted task to be queued")


def test_tasks_committed_before_a_manager_kill_run_once_after_it(service: Any,
                                                                 tmp_path: Path) -> None:
    _sleepy(service)
    tm = TaskManager(service)
    # Given tasks committed by the client, some of whose notices the manager never sees
    tasks = [tm.submit_sync(sleep_request(0.05, marker_dir=str(tmp_path))) for _ in range(30)]
    ray.kill(service.handle(MANAGER), no_restart=False)
    tasks += [tm.submit_sync(sleep_request(0.05, marker_dir=str(tmp_path))) for _ in range(10)]
    # Then every one completes, and none ran twice but for a lease the kill cost
    done = tm.wait_all_sync([t.id for t in tasks], timeout_s=120)
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    assert all(len(starts(tmp_path, t.id)) == t.attempt + 1 for t in done)
    wait_for(lambda: intake_rows(service) == [], what="the intake rows to be claimed")
