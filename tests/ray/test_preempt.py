"""Preemption on a real local Ray cluster: a HIGH task with a deadline takes the executor
of a LOW run of a preemptible type; the run checkpoints and stops (or is forced after its
grace time), resumes later from its checkpoint and completes once, spending no retry."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from raytasks import TaskCreateRequest, TaskManager, TaskPriority, TaskStatus, register_task_type
from raytasks.settings import TaskTypeSettings
from tests.conftest import wait_for
from tests.helpers import StepParams, stepper, steps_run


def _step(marks: Path, kind: str, steps: int, priority: TaskPriority = TaskPriority.LOW,
          deadline_in_s: float | None = None, **params: Any) -> TaskCreateRequest:
    deadline = datetime.fromtimestamp(time.time() + deadline_in_s, tz=UTC) \
        if deadline_in_s is not None else None
    return TaskCreateRequest(name=f"{kind} x{steps}", task_type="stepper", priority=priority,
                             max_retries=0, deadline=deadline, parameters={
                                 "kind": kind, "steps": steps, "step_s": 0.1,
                                 "marker_dir": str(marks), **params})


def _service(make_service: Any) -> tuple[Any, TaskManager]:
    service = make_service(task_types={"stepper": TaskTypeSettings(preempt_grace_s=2.0)})
    register_task_type("stepper", stepper, params_model=StepParams, preemptible=True,
                       workers=1, runtime=service)
    return service, TaskManager(service)


def _teach(tm: TaskManager, marks: Path) -> None:
    """Run one long (6 s) and one short (0.2 s) task: what run times are predicted from."""
    for kind, steps in (("long", 60), ("short", 2)):
        assert tm.wait_sync(tm.submit_sync(_step(marks, kind, steps)).id,
                            timeout_s=120).status is TaskStatus.COMPLETED


def _running_with_steps(tm: TaskManager, marks: Path, task_id: str, n: int) -> None:
    wait_for(lambda: tm.get_task_sync(task_id).status is TaskStatus.RUNNING
             and len(steps_run(marks, task_id)) >= n, timeout_s=60, what=f"{n} steps")


def test_a_deadline_preempts_a_checkpointing_run_that_resumes_and_completes_once(
        make_service: Any, tmp_path: Path) -> None:
    _, tm = _service(make_service)
    _teach(tm, tmp_path)
    # Given the one executor busy with a LOW run of 6 s, 5 steps in
    low = tm.submit_sync(_step(tmp_path, "long", 60))
    _running_with_steps(tm, tmp_path, low.id, 5)
    # When a HIGH task arrives that must be done within 3 s
    high = tm.submit_sync(_step(tmp_path, "short", 2, TaskPriority.HIGH, deadline_in_s=3))
    done_high = tm.wait_sync(high.id, timeout_s=60)
    # Then it completes before its deadline, having waited for the preemption only
    assert done_high.status is TaskStatus.COMPLETED
    assert done_high.finished_at is not None and done_high.deadline is not None
    assert done_high.finished_at <= done_high.deadline
    # and the LOW run resumes from its checkpoint and completes once, every step run once
    # (a step finished between its checkpoint and the stop is none: it stops after one)
    done_low = tm.wait_sync(low.id, timeout_s=120)
    assert done_low.status is TaskStatus.COMPLETED
    assert (done_low.attempt, done_low.preemptions) == (1, 1)  # no retry spent (max 0)
    assert done_low.result["resumed_at"] > 0
    ran = steps_run(tmp_path, low.id)
    assert sorted(step for _a, step in ran) == list(range(60))
    assert {a for a, _s in ran} == {0, 1}
    # Its attempts and its first attempt's log show the preemption
    attempts = tm.attempts_sync(low.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(0, "preempted"), (1, "completed")]
    lines = [row["line"] for row in tm.logs_sync(low.id, attempt=0)]
    assert any("preempted for a task with a deadline" in m for m in lines), lines


def test_a_run_that_ignores_the_request_is_forced_after_its_grace(make_service: Any,
                                                                  tmp_path: Path) -> None:
    _, tm = _service(make_service)
    _teach(tm, tmp_path)
    # Given the executor busy with a LOW run that never looks at its context
    low = tm.submit_sync(_step(tmp_path, "long", 60, cooperative=False))
    _running_with_steps(tm, tmp_path, low.id, 5)
    # When a HIGH task with a deadline preempts it
    high = tm.submit_sync(_step(tmp_path, "short", 2, TaskPriority.HIGH, deadline_in_s=4))
    # Then its process is replaced after the 2 s grace: the HIGH task runs on the new one
    assert tm.wait_sync(high.id, timeout_s=60).status is TaskStatus.COMPLETED
    done_low = tm.wait_sync(low.id, timeout_s=120)
    assert done_low.status is TaskStatus.COMPLETED and done_low.preemptions == 1
    attempts = tm.attempts_sync(low.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(0, "preempted"), (1, "completed")]
    lines = [row["line"] for row in tm.logs_sync(low.id, attempt=0)]
    assert any("did not stop within its grace time" in m for m in lines), lines
    # It lost at most the step under way when it was forced: every step ran, few twice
    ran = [step for _a, step in steps_run(tmp_path, low.id)]
    assert sorted(set(ran)) == list(range(60)) and len(ran) - 60 <= 1
