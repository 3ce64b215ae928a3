"""Lent runs on a real local Ray: a lone plain submit goes to an idle executor the manager
lent this client; the client commits the task RUNNING under its first lease before it
sends it, and commits the completion itself.

Whatever happens to the run (the loan over, the handler failing, a cancel, a long run,
the executor killed, the client's commit refused), the task ends once, as it would
through the manager, and the manager's memory and counters agree with the store.
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
    TaskStatus,
    register_task_type,
)
from raytasks.messages import IntakeGrant, NewTask, Report
from raytasks.runtime import MANAGER, loans
from raytasks.runtime.intake import rows_of
from raytasks.runtime.loans import _commit_completion
from raytasks.store import SqlTaskStore, WriteBatch
from raytasks.store.base import RowUpdate, StaleWriteError
from tests.conftest import executor_running, wait_for
from tests.helpers import SleepParams, sleepy, starts
from tests.ray.intake import intake_rows, sleep_request, statuses


def _ready(service: Any, workers: int = 1) -> TaskManager:
    """A pool of ``workers`` sleepy executors, one of them lent to this client once."""
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=workers,
                       runtime=service)
    tm = TaskManager(service)
    lent = service.session.loans
    # the first lone submits go through the queues until an executor waits idle
    wait_for(lambda: tm.wait_sync(tm.submit_sync(sleep_request()).id, 30) and lent.ran > 0,
             timeout_s=30, what="a lent run")
    return tm


def _manager_idle(service: Any) -> bool:
    return ray.get(service.handle(MANAGER).stats.remote())["active"] == 0


def _counted(service: Any, tm: TaskManager) -> None:
    """The manager, told by the notices, counts every end once and holds nothing."""
    total = len(tm.list_tasks_sync().items)
    wait_for(lambda: tm.stats_sync()["status_counts"] == {"COMPLETED": total},
             what="the manager to count every end")
    wait_for(lambda: _manager_idle(service), what="the manager to hold nothing")
    wait_for(lambda: intake_rows(service) == [], what="every intake row claimed")
    time.sleep(0.5)  # nothing is counted twice later
    assert tm.stats_sync()["status_counts"] == {"COMPLETED": total}


def test_a_lone_submit_runs_on_a_lent_executor_and_reads_as_the_store_holds_it(
        service: Any, tmp_path: Path) -> None:
    tm = _ready(service)
    lent = service.session.loans
    ran = lent.ran
    # When a lone plain task is submitted and waited for
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path)))
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then this client ran it on the lent executor and committed its end
    assert lent.ran == ran + 1
    assert done.status is TaskStatus.COMPLETED and done.result["attempt"] == 0
    assert starts(tmp_path, task.id) == [0]
    # and what the wait answered is what the store holds, field by field, the lineage
    # whole (its environment, stored apart, put back)
    assert done.model_dump() == tm.get_task_sync(task.id).model_dump()
    assert done.lineage and {"raytasks", "code", "libraries", "parameters"} <= set(done.lineage)
    # its life is told in order, and its log lines were committed with its end
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "COMPLETED"]
    lines = [line["line"] for line in tm.logs_sync(task.id)]
    assert lines[0].startswith("attempt 0 started") and "completed" in lines[-1]
    _counted(service, tm)


def test_a_task_sent_after_its_loan_ended_is_leased_without_spending_an_attempt(
        make_service: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client that keeps using a loan past its end (as a slow client's clock could)
    monkeypatch.setattr(loans, "USABLE_SHARE", 1000.0)
    service = make_service(executor_loan_s=0.3)
    tm = _ready(service)
    lent = service.session.loans
    wait_for(lambda: not any(e.get("lent") for e in
                             TaskExecutionEngine(service).executors_sync()),
             what="the loan to end")
    ran = lent.ran
    # When a lone task is sent under the ended loan
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path)))
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then the executor turned it away, the manager queued it again and leased it, on its
    # first attempt, and it ran once
    assert lent.ran == ran
    assert done.status is TaskStatus.COMPLETED and done.attempt == 0
    assert starts(tmp_path, task.id) == [0]
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "PENDING", "RUNNING",
                                           "COMPLETED"]


def test_a_failed_lent_run_is_retried_by_the_manager(service: Any, tmp_path: Path) -> None:
    tm = _ready(service)
    ran = service.session.loans.ran
    # When a lone task fails on its first attempt and may be retried
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path), fail_attempts=1,
                                        max_retries=1))
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then the manager decided the retry, as for any attempt, and the second one completed
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    assert starts(tmp_path, task.id) == [0, 1]
    assert service.session.loans.ran == ran  # no completion of the client's
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "PENDING", "RUNNING",
                                           "COMPLETED"]


def test_a_long_lent_run_is_reported_by_its_executor(service: Any, tmp_path: Path) -> None:
    tm = _ready(service)
    ran = service.session.loans.ran
    # When a lone task runs past a heartbeat interval (0.3 s here)
    task = tm.submit_sync(sleep_request(1.0, marker_dir=str(tmp_path)))
    wait_for(lambda: ProgressTracker(service).get_progress_sync(task.id).percentage > 0,
             what="its progress, renewed through heartbeats while it runs")
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then its executor reported the end to the manager, which adopted it at the first
    # heartbeat, and the wait learnt it from the stream
    assert service.session.loans.ran == ran
    assert done.status is TaskStatus.COMPLETED and done.result["slept"] == 1.0
    assert starts(tmp_path, task.id) == [0]


def test_a_lent_run_can_be_cancelled(service: Any, tmp_path: Path) -> None:
    tm = _ready(service)
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path), forever=True))
    wait_for(lambda: starts(tmp_path, task.id) == [0], what="it to start")
    # When it is cancelled while it runs
    tm.cancel_task_sync(task.id)
    # Then it stops and ends CANCELLED
    done = tm.wait_sync(task.id, timeout_s=30)
    assert done.status is TaskStatus.CANCELLED and done.error is not None
    assert done.error.reason == "cancelled"


def test_a_lent_run_whose_executor_dies_runs_again(service: Any, tmp_path: Path) -> None:
    tm = _ready(service)
    task = tm.submit_sync(sleep_request(5.0, marker_dir=str(tmp_path), max_retries=1))
    wait_for(lambda: starts(tmp_path, task.id) == [0], what="it to start")
    executor = executor_running(TaskExecutionEngine(service), task.id)
    # When its executor's process is killed mid-run
    os.kill(executor["pid"], signal.SIGKILL)
    # Then its lease expires, and the manager runs it again (Ray restarts the executor)
    done = tm.wait_sync(task.id, timeout_s=60)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    assert starts(tmp_path, task.id) == [0, 1]


def test_a_lent_run_the_store_refuses_goes_another_route(service: Any,
                                                         tmp_path: Path) -> None:
    tm = _ready(service)
    ran = service.session.loans.ran
    # Given a store that refuses the RUNNING row of a task named "refused" (as a full disk
    # or a lock held too long would refuse the client's commit; a PENDING row passes)
    path = service.settings.store_url.split("///", 1)[-1]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER refuse_lent BEFORE INSERT ON rt_tasks "
                   "WHEN NEW.name = 'refused' AND NEW.status = 'RUNNING' "
                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    # When a lone task would run on the lent executor
    task = tm.submit_sync(sleep_request(marker_dir=str(tmp_path)).model_copy(
        update={"name": "refused"}))
    done = tm.wait_sync(task.id, timeout_s=30)
    # Then nothing was sent before it was stored: it was queued instead, and ran once
    assert service.session.loans.ran == ran
    assert done.status is TaskStatus.COMPLETED and done.attempt == 0
    assert starts(tmp_path, task.id) == [0]
    assert statuses(service, task.id) == ["PENDING", "RUNNING", "COMPLETED"]
    assert len(list(tmp_path.glob("*.starts"))) == 1
    _counted(service, tm)


@pytest.fixture
def store(store_url: str) -> Any:
    opened = SqlTaskStore(store_url)
    yield opened
    opened.close()


def test_a_stale_lent_completion_changes_nothing(store: Any, store_url: str) -> None:
    # Given a task a client committed RUNNING under the first lease
    grant = IntakeGrant(store_url=store_url, credits={"default": 10}, ttl_s=10.0,
                        types={"sleepy": (None, None, 1)}, max_parameters_bytes=65536)
    rows = rows_of([NewTask("t1", "sleep", "sleepy", {"seconds": 0})], grant, time.time(),
                   "client", "executor:sleepy:0")
    store.commit(WriteBatch(inserts=rows.tasks, events=rows.events, intake=rows.intake))
    # whose lease the manager ended meanwhile and gave to another attempt (token 2)
    store.commit(WriteBatch(updates=[RowUpdate("t1", {"lease_token": 2, "attempt": 1},
                                               token=1, status="RUNNING")]))
    before = store.get("t1")
    # When the first attempt's completion arrives late
    report = Report("t1", 1, "completed", result='{"late": true}')
    with pytest.raises(StaleWriteError):
        _commit_completion(store, rows.tasks[0], report)
    # Then nothing changed: not the task, and no event of an end
    assert store.get("t1") == before
    assert before.status is TaskStatus.RUNNING and before.result is None
    assert [e["payload"] for e in store.events_after(0, 100)
            if '"COMPLETED"' in e["payload"]] == []
