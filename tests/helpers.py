"""Task handlers used by the tests (shipped to the executors by value)."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from raytasks import TaskExecutionContext


class SleepParams(BaseModel):
    seconds: float = 0.0
    marker_dir: str | None = None
    fail_attempts: int = 0
    forever: bool = False
    cooperative: bool = True
    size: int = 0


def sleepy(params: SleepParams, ctx: TaskExecutionContext) -> dict[str, object]:
    """Sleeps (or spins), recording each start in ``marker_dir``; fails its first attempts."""
    started = time.time()
    if params.marker_dir:
        with open(Path(params.marker_dir) / f"{ctx.task_id}.starts", "a") as fh:
            fh.write(f"{ctx.attempt} {started}\n")
    if ctx.attempt < params.fail_attempts:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    if params.forever and not params.cooperative:
        while True:  # CPU-bound, never looks at the context
            pass
    deadline = started + params.seconds
    steps = 0
    while params.forever or time.time() < deadline:
        steps += 1
        ctx.report_progress(min(0.99, (time.time() - started) / max(params.seconds, 1e-9)),
                            f"step {steps}")
        ctx.check_cancelled()
        time.sleep(0.02)
    ctx.report_progress(1.0, "done")
    return {"slept": params.seconds, "attempt": ctx.attempt, "started": started,
            "blob": "x" * params.size}


def starts(marker_dir: Path, task_id: str) -> list[int]:
    path = marker_dir / f"{task_id}.starts"
    if not path.exists():
        return []
    return [int(line.split()[0]) for line in path.read_text().splitlines()]


class StepParams(BaseModel):
    kind: str = "long"
    steps: int = 10
    step_s: float = 0.1
    marker_dir: str
    cooperative: bool = True  # False: never looks at its context (but checkpoints)


def stepper(params: StepParams, ctx: TaskExecutionContext) -> dict[str, object]:
    """Runs ``steps`` steps of ``step_s``, saving a checkpoint after each and resuming from
    the last one; records every step it runs (``<attempt> <step>``) in ``marker_dir``. A
    cooperative one stops when preempted (after its checkpoint); the other spins on."""
    first = int((ctx.checkpoint or {}).get("done", 0))
    marks = Path(params.marker_dir) / f"{ctx.task_id}.steps"
    for step in range(first, params.steps):
        until = time.time() + params.step_s
        while time.time() < until:
            if not params.cooperative:
                continue  # spins: a handler that never looks at its context
            time.sleep(0.01)
        with open(marks, "a") as fh:
            fh.write(f"{ctx.attempt} {step}\n")
        ctx.save_checkpoint({"done": step + 1})
        ctx.report_progress((step + 1) / params.steps, f"step {step + 1}")
        if params.cooperative:
            ctx.check_preempted()
    return {"steps": params.steps, "resumed_at": first, "attempt": ctx.attempt}


def steps_run(marker_dir: Path, task_id: str) -> list[tuple[int, int]]:
    """(attempt, step) of every step a stepper task ran, in order."""
    path = marker_dir / f"{task_id}.steps"
    if not path.exists():
        return []
    return [(int(a), int(s)) for a, s in (line.split() for line in path.read_text().split("\n")
                                          if line)]
