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
