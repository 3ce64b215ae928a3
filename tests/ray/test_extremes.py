"""No setting the settings accept breaks correctness: the fast paths (lent runs, the intake)
and the queues, with kills and pauses, at the shortest and the longest heartbeats and
leases the issue names. Nothing lost, nothing completed twice, nothing run twice without
cause (a lease that ran out), and every wait learns its task's end."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from raytasks import TaskExecutionEngine, TaskManager, TaskStatus, register_task_type
from raytasks.runtime import MANAGER
from tests.conftest import executor_running, wait_for
from tests.helpers import SleepParams, sleepy, starts
from tests.ray.intake import sleep_request, statuses


def _once(service: Any, task_id: str) -> None:
    """The task completed once: one COMPLETED in its stream of status events."""
    assert statuses(service, task_id).count("COMPLETED") == 1, statuses(service, task_id)


@pytest.mark.parametrize(("heartbeat_s", "ttl_s"), [(0.01, 0.3), (5.0, 60.0)],
                         ids=["shortest", "longest"])
def test_the_fast_paths_stay_correct_at_the_settings_extremes(
        make_service: Any, tmp_path: Path, heartbeat_s: float, ttl_s: float) -> None:
    service = make_service(heartbeat_interval_s=heartbeat_s, lease_ttl_s=ttl_s,
                           cancel_grace_s=0.5)
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=2,
                       runtime=service)
    tm = TaskManager(service)
    marks = str(tmp_path)
    # Given 40 lone tasks, each submitted and waited for in turn: of 0.2 s (their
    # executor's heartbeats carry them) and of none (they end before a heartbeat)
    lone = []
    for i in range(40):
        task = tm.submit_sync(sleep_request(0.2 if i % 2 else 0.0, marker_dir=marks))
        lone.append(tm.wait_sync(task.id, timeout_s=60))
    # Then each completed on its first attempt and ran once, most on a lent executor
    assert {(t.status, t.attempt) for t in lone} == {(TaskStatus.COMPLETED, 0)}
    assert all(starts(tmp_path, t.id) == [0] for t in lone)
    assert service.session.loans.started > 10

    # When the manager is killed while a batch runs
    batch = tm.submit_many_sync([sleep_request(0.05, marker_dir=marks) for _ in range(20)])
    ray.kill(service.handle(MANAGER), no_restart=False)
    done = tm.wait_all_sync([t.id for t in batch], timeout_s=120)
    # Then every task completed once; any second run is a recorded attempt (a lease that
    # ran out while the manager was away), never a silent one
    assert {t.status for t in done} == {TaskStatus.COMPLETED}
    for task in done:
        _once(service, task.id)
        assert len(starts(tmp_path, task.id)) == task.attempt + 1

    # When an executor running a lent task is paused, past the lease if the lease is short
    paused = tm.submit_sync(sleep_request(1.0, marker_dir=marks, max_retries=2))
    wait_for(lambda: starts(tmp_path, paused.id), what="the paused task to start")
    pid = executor_running(TaskExecutionEngine(service), paused.id)["pid"]
    os.kill(pid, signal.SIGSTOP)
    time.sleep(ttl_s + 0.7 if ttl_s < 10 else 1.0)
    os.kill(pid, signal.SIGCONT)
    ended = tm.wait_sync(paused.id, timeout_s=120)
    # Then it completed once: past the lease on another attempt (the paused one fenced
    # off), within it on the first
    assert ended.status is TaskStatus.COMPLETED
    assert ended.attempt == (1 if ttl_s < 10 else 0)
    _once(service, paused.id)

    if ttl_s < 10:  # a killed executor's task comes back only when its lease runs out
        killed = tm.submit_sync(sleep_request(2.0, marker_dir=marks, max_retries=2))
        wait_for(lambda: starts(tmp_path, killed.id), what="the killed task to start")
        os.kill(executor_running(TaskExecutionEngine(service), killed.id)["pid"], signal.SIGKILL)
        again = tm.wait_sync(killed.id, timeout_s=120)
        assert again.status is TaskStatus.COMPLETED and again.attempt == 1
        _once(service, killed.id)

    # Finally, after one more manager kill, a wait on every task returns within seconds
    ray.kill(service.handle(MANAGER), no_restart=False)
    ids = [t.id for t in lone + done] + [paused.id]
    started = time.monotonic()
    assert {t.status for t in tm.wait_all_sync(ids, timeout_s=60)} == {TaskStatus.COMPLETED}
    assert time.monotonic() - started < 20
