"""Direct runs on a real local Ray: a lone plain submit is committed RUNNING under its first
lease and handed to an idle executor by the client, which commits the completion itself.

Whatever happens to the run (the executor busy, the handler failing, a cancel, a long run,
the executor killed), the task ends once, as it would through the manager, and the
manager's memory and counters agree with the store.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from raytasks import (
    ProgressTracker,
    TaskExecutionEngine,
    TaskManager,
    TaskNotFoundError,
    TaskStatus,
    register_task_type,
)
from raytasks.messages import IntakeGrant, NewTask, Report
from raytasks.runtime import MANAGER
from raytasks.runtime.direct import _completed, _rows, _Runner
from raytasks.store import SqlTaskStore, WriteBatch
from raytasks.store.base import RowUpdate, StaleWriteError
from tests.conftest import wait_for
from tests.helpers import SleepParams, sleepy, starts
from tests.ray.intake import intake_rows, sleep_request, statuses


def _ready(service: Any, tmp_path: Path, workers: int = 1) -> TaskManager:
    """A pool of ``workers`` sleepy executors, offered to this client for direct runs."""
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=workers,
                       runtime=service)
    tm = TaskManager(service)
    direct = service.session.direct
    # the first lone submits go through the manager until the grant names the executors
    wait_for(lambda: tm.wait_sync(tm.submit_sync(sleep_request()).id, 30) and direct.ran > 0,
             timeout_s=30, what="a direct run")
    return tm


def _manager_idle(service: Any) -> bool:
    return ray.get(service.handle(MANAGER).stats.remote())["active"] == 0


def test_a_lone_submit_runs_directly_and_reads_as_the_store_holds_it(
        service: Any, tmp_path: Path) -> None:
    tm = _ready(service, tmp_path)
    direct = service.session.direct
    ran, committed = direct.ran, direct.committed
    # When a lone plain task is submitted and waited for
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path)))
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then this client ran it on the idle executor and committed its end
    assert direct.ran == ran + 1 and direct.committed == committed + 1
    assert done.status is TaskStatus.COMPLETED and done.result["attempt"] == 0
    assert starts(tmp_path, task.id) == [0]
    # and what the wait answered is what the store holds, field by field
    assert done.model_dump() == tm.get_task_sync(task.id).model_dump()
    # its life is told in order, and its log lines were committed with its end
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "COMPLETED"]
    lines = [line["line"] for line in tm.logs_sync(task.id)]
    assert lines[0].startswith("attempt 0 started") and "completed" in lines[-1]
    # and the manager, told by the notices a moment later, counts every end once and
    # holds nothing
    total = len(tm.list_tasks_sync().items)
    wait_for(lambda: tm.stats_sync()["status_counts"] == {"COMPLETED": total},
             what="the manager to count every end")
    assert _manager_idle(service) and intake_rows(service) == []
    time.sleep(0.5)  # nothing is counted twice later
    assert tm.stats_sync()["status_counts"] == {"COMPLETED": total}


def test_a_busy_executor_hands_the_task_back_without_spending_an_attempt(
        service: Any, tmp_path: Path) -> None:
    tm = _ready(service, tmp_path)
    direct = service.session.direct
    # Given the one executor busy with a task the manager leased (a batch goes that way)
    long, _other = tm.submit_many_sync([sleep_request(0.5, marker_dir=str(tmp_path))] * 2)
    wait_for(lambda: starts(tmp_path, long.id) == [0], what="the leased task to start")
    started, ran = direct.started, direct.ran
    # When a lone task is handed to it
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path)))
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then it refused, the manager queued the task again and leased it after the first,
    # on its first attempt, and the task ran once
    assert direct.started == started + 1 and direct.ran == ran
    assert done.status is TaskStatus.COMPLETED and done.attempt == 0
    assert starts(tmp_path, task.id) == [0]
    assert done.started_at is not None and done.started_at >= \
        tm.get_task_sync(long.id).finished_at
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "PENDING", "RUNNING",
                                           "COMPLETED"]


def test_a_failed_direct_run_is_retried_by_the_manager(service: Any, tmp_path: Path) -> None:
    tm = _ready(service, tmp_path)
    ran = service.session.direct.ran
    # When a lone task fails on its first attempt and may be retried
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path), fail_attempts=1, max_retries=1))
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then the manager decided the retry, as for any attempt, and the second one completed
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    assert starts(tmp_path, task.id) == [0, 1]
    assert service.session.direct.ran == ran  # no completion of the client's
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "PENDING", "RUNNING",
                                           "COMPLETED"]


def test_a_long_direct_run_is_reported_by_its_executor(service: Any, tmp_path: Path) -> None:
    tm = _ready(service, tmp_path)
    direct = service.session.direct
    started, ran = direct.started, direct.ran
    # When a lone task runs past a heartbeat interval (0.3 s here)
    task = tm.submit_sync(sleep_request(1.0, marker_dir=str(tmp_path)))
    wait_for(lambda: ProgressTracker(service).get_progress_sync(task.id).percentage > 0,
             what="its progress, renewed through heartbeats while it runs")
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then its executor reported the end to the manager, which holds its lease by then
    # (the client may be gone), and the wait learnt it from the stream
    assert direct.started == started + 1 and direct.ran == ran
    assert done.status is TaskStatus.COMPLETED and done.result["slept"] == 1.0
    assert starts(tmp_path, task.id) == [0]


def test_a_direct_run_can_be_cancelled(service: Any, tmp_path: Path) -> None:
    tm = _ready(service, tmp_path)
    started = service.session.direct.started
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path), forever=True))
    assert service.session.direct.started == started + 1
    wait_for(lambda: starts(tmp_path, task.id) == [0], what="it to start")
    # When it is cancelled while it runs
    tm.cancel_task_sync(task.id)
    # Then it stops and ends CANCELLED
    done = tm.wait_sync(task.id, timeout_s=30)
    assert done.status is TaskStatus.CANCELLED and done.error is not None
    assert done.error.reason == "cancelled"


def test_a_direct_run_whose_executor_dies_runs_again(service: Any, tmp_path: Path) -> None:
    tm = _ready(service, tmp_path)
    task = tm.submit_sync(sleep_request(5.0, marker_dir=str(tmp_path), max_retries=1))
    wait_for(lambda: starts(tmp_path, task.id) == [0], what="it to start")
    [executor] = [e for e in TaskExecutionEngine(service).executors_sync()
                  if e["current"] == task.id]
    # When its executor's process is killed mid-run
    os.kill(executor["pid"], signal.SIGKILL)
    # Then its lease expires, and the manager runs it again (Ray restarts the executor)
    done = tm.wait_sync(task.id, timeout_s=60)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    assert starts(tmp_path, task.id) == [0, 1]


def test_a_direct_run_whose_commit_fails_is_void(service: Any, tmp_path: Path) -> None:
    tm = _ready(service, tmp_path)
    direct = service.session.direct
    # Given a store that refuses the RUNNING row of a task named "refused" (as a full disk
    # or a lock held too long would refuse the client's commit; the manager's PENDING row
    # passes)
    path = service.settings.store_url.split("///", 1)[-1]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER refuse_direct BEFORE INSERT ON rt_tasks "
                   "WHEN NEW.name = 'refused' AND NEW.status = 'RUNNING' "
                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    started, ran = direct.started, direct.ran
    # When a lone task is sent to run directly, past a heartbeat interval, and its commit
    # fails meanwhile
    request = sleep_request(0.6, marker_dir=str(tmp_path)).model_copy(
        update={"name": "refused"})
    task = tm.submit_sync(request)
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then the submit was answered through the manager, under a new id, and that task
    # completed once, on its first attempt, as any task the manager leased
    assert direct.started == started + 1 and direct.ran == ran
    assert done.status is TaskStatus.COMPLETED and done.attempt == 0
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "COMPLETED"]
    ran_ids = {marker.name.removesuffix(".starts") for marker in tmp_path.glob("*.starts")}
    assert starts(tmp_path, task.id) == [0]
    # and the void run (the executor started it before the commit failed) left nothing:
    # no task, no event, no intake row, nothing the manager holds or counts
    [void] = ran_ids - {task.id}
    with pytest.raises(TaskNotFoundError):
        tm.get_task_sync(void)
    assert statuses(service, void) == []
    total = len(tm.list_tasks_sync().items)
    wait_for(lambda: tm.stats_sync()["status_counts"] == {"COMPLETED": total},
             what="the manager to count every end")
    wait_for(lambda: _manager_idle(service), what="the manager to hold nothing")
    assert intake_rows(service) == []


@pytest.fixture
def store(store_url: str) -> Any:
    opened = SqlTaskStore(store_url)
    yield opened
    opened.close()


def test_a_stale_direct_completion_changes_nothing(store: Any, store_url: str) -> None:
    # Given a task a client committed RUNNING under the first lease
    grant = IntakeGrant(store_url=store_url, credits={"default": 10}, ttl_s=10.0,
                        types={"sleepy": (None, None, 1)}, max_parameters_bytes=65536)
    rows = _rows([NewTask("t1", "sleep", "sleepy", {"seconds": 0})], grant, time.time(),
                 "client", _Runner("executor:sleepy:0", 1, 10.0))
    store.commit(WriteBatch(inserts=rows.tasks, events=rows.events, intake=rows.intake))
    # whose lease the manager ended meanwhile and gave to another attempt (token 2)
    store.commit(WriteBatch(updates=[RowUpdate("t1", {"lease_token": 2, "attempt": 1},
                                               token=1, status="RUNNING")]))
    before = store.get("t1")
    # When the first attempt's completion arrives late
    report = Report("t1", 1, "completed", result='{"late": true}')
    with pytest.raises(StaleWriteError):
        _completed(store, rows.tasks[0], report)
    # Then nothing changed: not the task, and no event of an end
    assert store.get("t1") == before
    assert before.status is TaskStatus.RUNNING and before.result is None
    assert [e["payload"] for e in store.events_after(0, 100)
            if '"COMPLETED"' in e["payload"]] == []
