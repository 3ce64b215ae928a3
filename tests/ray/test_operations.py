"""Research operations on a real local Ray: schedules that run, and task logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel, SecretStr

from raytasks import (
    ScheduleCreateRequest,
    ScheduleRule,
    TaskCreateRequest,
    TaskExecutionContext,
    TaskManager,
    TaskQuery,
    TaskStatus,
    register_task_type,
)
from raytasks.settings import DataSourceSettings, ResourceSettings
from tests.conftest import wait_for
from tests.helpers import SleepParams, sleepy

SECRET = "vendor-token-0123456789"


class Noisy(BaseModel):
    fail: bool = True


def noisy(params: Noisy, ctx: TaskExecutionContext) -> dict[str, int]:
    print(f"loading bars for attempt {ctx.attempt}")
    logging.getLogger("research.model").info("fitting with token %s", SECRET)
    print("fit diverged", file=sys.stderr)
    if params.fail:
        raise ValueError("the model did not converge")
    return {"ok": 1}


def test_a_schedule_runs_pauses_and_survives_a_restart_without_a_duplicate(
        service: Any) -> None:
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=1, runtime=service)
    tm = TaskManager(service)
    # Given a schedule every 2 seconds
    made = tm.create_schedule_sync(ScheduleCreateRequest(
        name="every 2 s", rule=ScheduleRule(interval_s=2),
        template=TaskCreateRequest(name="scheduled", task_type="sleepy")))
    runs = wait_for(lambda: (t := [x for x in tm.list_tasks_sync(TaskQuery(limit=1000)).items
                                   if x.status is TaskStatus.COMPLETED]) and len(t) >= 2 and t,
                    timeout_s=30, what="two runs to complete")
    assert all(t.task_type == "sleepy" for t in runs)
    # When it is paused, no more runs come
    tm.pause_schedule_sync(made.id)
    paused_count = tm.list_tasks_sync(TaskQuery(limit=1000)).total
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert tm.list_tasks_sync(TaskQuery(limit=1000)).total == paused_count
        time.sleep(0.5)
    # And when it resumes and the manager is killed and restarted, no run is made twice
    tm.resume_schedule_sync(made.id)
    wait_for(lambda: tm.list_tasks_sync(TaskQuery(limit=1000)).total > paused_count,
             timeout_s=20, what="a run after resuming")
    ray.kill(service.handle("manager"), no_restart=False)
    wait_for(lambda: tm.list_tasks_sync(TaskQuery(limit=1000)).total >= paused_count + 3,
             timeout_s=60, what="runs after the restart")
    tm.pause_schedule_sync(made.id)
    tasks = [tm.get_task_sync(t.id) for t in tm.list_tasks_sync(TaskQuery(limit=1000)).items]
    keys = [t.idempotency_key for t in tasks]
    assert all(k and k.startswith(f"schedule:{made.id}:") for k in keys)
    slots = sorted(int(k.rsplit(":", 1)[1]) for k in keys if k)
    assert len(set(slots)) == len(slots)  # one task per run time
    anchor = round(made.created_at.timestamp())
    assert all((s - anchor) % 2 in (0, 1) for s in slots)  # run times on the 2 s grid


def test_a_task_that_logs_then_fails_shows_its_lines(make_service: Any, tmp_path: Path) -> None:
    service = make_service(resources=ResourceSettings(data_sources={
        "vendor": DataSourceSettings(kind="tushare", token=SecretStr(SECRET))}))
    register_task_type("noisy", noisy, params_model=Noisy, workers=1, max_retries=1,
                       runtime=service)
    tm = TaskManager(service)
    task = tm.submit_sync(TaskCreateRequest(name="noisy", task_type="noisy"))
    done = tm.wait_sync(task.id, timeout_s=60)
    assert done.status is TaskStatus.FAILED and done.attempt == 1
    # Then each attempt's lines are there: the framework's, print, stderr and logging
    lines = tm.logs_sync(task.id)
    by_attempt = {a: [(r["stream"], r["line"]) for r in lines if r["attempt"] == a]
                  for a in (0, 1)}
    first = by_attempt[0]
    assert first[0][0] == "raytasks" and "attempt 0 started" in first[0][1]
    assert ("stdout", "loading bars for attempt 0") in first
    assert ("INFO", "research.model: fitting with token ***") in first  # redacted
    assert ("stderr", "fit diverged") in first
    assert first[-1][0] == "raytasks" and "ValueError: the model did not converge" in \
        first[-1][1]
    assert [r["attempt"] for r in tm.logs_sync(task.id, attempt=1)] == [1] * len(by_attempt[1])
    assert SECRET not in repr(lines)
    # And the CLI shows them, one attempt at a time
    env = {**os.environ, "RAYTASKS_NAMESPACE": service.settings.namespace,
           "RAYTASKS_DATA_DIR": str(service.settings.data_dir)}
    cli = [str(Path(sys.executable).parent / "raytasks"), "--address",
           ray.get_runtime_context().gcs_address]
    out = subprocess.run([*cli, "logs", task.id, "--attempt", "1"], capture_output=True, text=True,
                         env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "loading bars for attempt 1" in out.stdout and "attempt 0" not in out.stdout
    missing = subprocess.run([*cli, "logs", "f" * 32], capture_output=True, text=True,
                             env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert missing.returncode == 3  # unknown id
