"""A superseded attempt never changes what readers see (the paused-executor scenario)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from raytasks import (
    TaskCreateRequest,
    TaskExecutionEngine,
    TaskManager,
    TaskStatus,
    register_task_type,
)
from tests.conftest import executor_running, wait_for
from tests.helpers import SleepParams, sleepy, starts


def test_a_paused_executors_stale_attempt_never_overwrites_the_accepted_result(
        service: Any, tmp_path: Path) -> None:
    # Given two executors, and a task with a large result running on one of them
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=2, runtime=service)
    tm = TaskManager(service)
    task = tm.submit_sync(TaskCreateRequest(
        name="paused", task_type="sleepy", max_retries=2,
        parameters={"seconds": 2.0, "marker_dir": str(tmp_path), "size": 100_000}))
    wait_for(lambda: starts(tmp_path, task.id) == [0], what="attempt 0 to start")
    engine = TaskExecutionEngine(service)
    paused = executor_running(engine, task.id)
    # When that executor is paused (SIGSTOP) past its lease TTL, as in a long GC pause
    os.kill(paused["pid"], signal.SIGSTOP)
    try:
        # Then the lease expires and the other executor runs attempt 1 to completion
        done = tm.wait_sync(task.id, timeout_s=60)
    finally:
        os.kill(paused["pid"], signal.SIGCONT)
    assert done.status is TaskStatus.COMPLETED and done.attempt == 1
    assert done.result["attempt"] == 1
    # And when the paused process resumes, it learns it lost the lease and stops; its
    # attempt writes only into its own directory, which the task never points at
    def idle() -> bool:
        state = next(e for e in engine.executors_sync()
                     if e["executor_id"] == paused["executor_id"])
        if "error" in state:  # not answering within the engine's 3 s yet
            return False
        return state.get("current") is None and state.get("held") == 0

    wait_for(idle, timeout_s=30, what="the resumed executor to drop the stale attempt")
    # a report it still sends is fenced off by its stale lease token
    tm.wait_sync(tm.submit_sync(TaskCreateRequest(name="after", task_type="sleepy")).id, 30)
    again = tm.get_task_sync(task.id)
    assert again.result == done.result and again.result_uri == done.result_uri
    assert again.attempt == 1 and again.status is TaskStatus.COMPLETED
    assert done.result_uri is not None and f"/1-{done.lease_token}/" in done.result_uri
    stale = list((Path(done.result_uri).parent.parent).glob("0-*"))
    assert stale, "attempt 0 had a directory of its own"
