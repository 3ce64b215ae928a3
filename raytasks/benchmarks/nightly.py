"""``raytasks bench nightly``: the nightly batch against a cluster full of LOW training, with
preemption and without, in the same run, on the same embedded Ray.

The trainer executors (``--trainers``, one per core by default) are first saturated by LOW
training runs of minutes each: a one-hidden-layer network fitted by plain mini-batch SGD on
an Alpha158-shaped feature matrix (``rows`` x 158, made from a seed), checkpointing its
weights every few epochs and resuming from them. Then the nightly batch arrives: HIGH
retrainings of the same type, due ``--deadline`` seconds later, a deadline that only
preemption can meet (the LOW runs end long after it). Each side is a raytasks of its own
(``preemption`` on or off, everything else alike); before the LOW runs start, one short run
teaches the manager the type's run time per work unit, as history would.

Printed per side: whether the deadline was met and by how much, the HIGH tasks' waits
(submit to start), the LOW compute redone (the epochs run again since the last checkpoint,
the epoch under way when stopped, and every later attempt's setup: the work preemption threw
away, about a checkpoint interval and a setup per preemption), and that every LOW task
completed, once, every epoch run to the end (again only after a preemption, since the last
checkpoint). Beside it, the median absolute percentage error of the run-time
predictions of this run's attempts (from the store: the prediction made when each task was
queued, against its run time).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ..api import TaskManager, register_task_type
from ..context import TaskExecutionContext
from ..models import TaskCreateRequest, TaskPriority, TaskStatus
from ..runtime import connect, disconnect
from ..settings import Settings, TaskTypeSettings

TYPE = "nightly_train"
#: Epochs between checkpoints: a preemption redoes at most this many, and the one under way.
CHECKPOINT_EVERY = 4
FEATURES = 158  # Alpha158's


class FitParams(BaseModel):
    """One training run: ``epochs`` passes of mini-batch SGD over ``rows`` rows."""

    rows: int = Field(default=150_000, ge=1000, le=2_000_000)
    hidden: int = Field(default=128, ge=4, le=1024)
    epochs: int = Field(default=10, ge=1, le=100_000)
    checkpoint_every: int = Field(default=CHECKPOINT_EVERY, ge=1)
    seed: int = 0
    marks: str  # a directory the benchmark reads: each epoch that counted, each completion

    def work_units(self) -> int:
        return self.epochs * self.rows // 1000


def fit(params: FitParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """Fit, checkpointing the weights every ``checkpoint_every`` epochs; resume from them.
    Stops at once when preempted (the epoch under way is lost, not the ones saved)."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    rng = np.random.default_rng(params.seed)
    x = rng.standard_normal((params.rows, FEATURES), dtype=np.float32)
    y = (np.tanh(x[:, :8].sum(axis=1) * 0.3) + 0.5 * rng.standard_normal(params.rows)
         ).astype(np.float32)
    saved = ctx.checkpoint or {}
    first = int(saved.get("epoch", 0))
    if first:
        w1 = np.asarray(saved["w1"], dtype=np.float32)
        b1, w2 = (np.asarray(saved[k], dtype=np.float32) for k in ("b1", "w2"))
        b2 = np.float32(saved["b2"])
    else:
        w1 = (rng.standard_normal((FEATURES, params.hidden)) * 0.05).astype(np.float32)
        b1, w2 = np.zeros(params.hidden, np.float32), \
            (rng.standard_normal(params.hidden) * 0.05).astype(np.float32)
        b2 = np.float32(0.0)
    marks = Path(params.marks) / f"{ctx.task_id}.epochs"
    with open(Path(params.marks) / f"{ctx.task_id}.setup", "a") as setup:
        setup.write(f"{ctx.attempt} {time.perf_counter() - started:.6f}\n")
    loss = float("nan")
    with threadpool_limits(1), open(marks, "a") as out:
        for epoch in range(first, params.epochs):
            t0 = time.perf_counter()
            total = 0.0
            for s in range(0, params.rows, 256):
                if ctx.preempted:  # the epoch under way is lost; the saved ones are not
                    out.write(f"{ctx.attempt} lost {time.perf_counter() - t0:.6f}\n")
                    out.flush()
                    ctx.check_preempted()
                xb, yb = x[s:s + 256], y[s:s + 256]
                a = np.tanh(xb @ w1 + b1)
                g = (a @ w2 + b2 - yb) * (2.0 / len(yb))
                total += float(np.dot(g, g)) * len(yb) / 4.0
                ga = np.outer(g, w2) * (1.0 - a * a)
                w2 -= 0.01 * (a.T @ g)
                b2 -= np.float32(0.01 * g.sum())
                w1 -= 0.01 * (xb.T @ ga)
                b1 -= 0.01 * ga.sum(axis=0)
            loss = total / params.rows
            out.write(f"{ctx.attempt} {epoch} {time.perf_counter() - t0:.6f}\n")
            out.flush()
            if (epoch + 1) % params.checkpoint_every == 0 and epoch + 1 < params.epochs:
                ctx.save_checkpoint({"epoch": epoch + 1, "w1": w1.tolist(),
                                     "b1": b1.tolist(), "w2": w2.tolist(), "b2": float(b2)})
            ctx.report_progress((epoch + 1) / params.epochs, f"epoch {epoch + 1}")
    with open(Path(params.marks) / f"{ctx.task_id}.done", "a") as done:
        done.write(f"{ctx.attempt}\n")
    return {"epochs": params.epochs, "resumed_at": first, "loss": loss,
            "seconds": time.perf_counter() - started}


def _request(name: str, priority: TaskPriority, marks: Path, epochs: int, rows: int,
             deadline: float | None = None) -> TaskCreateRequest:
    return TaskCreateRequest(
        name=name, task_type=TYPE, priority=priority, max_retries=0,
        deadline=datetime.fromtimestamp(deadline, tz=UTC) if deadline else None,
        parameters={"epochs": epochs, "rows": rows, "marks": str(marks)})


def _side(preemption: bool, trainers: int, low_epochs: int, high_tasks: int,
          high_epochs: int, rows: int, deadline_s: float, grace_s: float,
          data_dir: Path) -> dict[str, Any]:
    label = "with" if preemption else "without"
    marks = data_dir / f"marks-{label}"
    marks.mkdir(parents=True)
    settings = Settings(namespace=f"raytasks-nightly-{label}", data_dir=data_dir / label,
                        ray_dashboard=False, preemption=preemption, workers_per_type=0,
                        task_types={TYPE: TaskTypeSettings(workers=trainers,
                                                           preempt_grace_s=grace_s)})
    runtime = connect(settings=settings)
    began = time.time()
    try:
        register_task_type(TYPE, fit, params_model=FitParams, preemptible=True,
                           workers=trainers, runtime=runtime)
        tm = TaskManager(runtime)
        # history: one short run teaches the manager the type's seconds per work unit
        teach = tm.submit_sync(_request("history", TaskPriority.MEDIUM, marks, 4, rows))
        if tm.wait_sync(teach.id, timeout_s=600).status is not TaskStatus.COMPLETED:
            raise RuntimeError("the history run failed")
        lows = tm.submit_many_sync([_request(f"low-{i}", TaskPriority.LOW, marks, low_epochs,
                                             rows) for i in range(trainers)])
        _wait(lambda: all(tm.get_task_sync(t.id).status is TaskStatus.RUNNING
                          for t in lows), 120, "the LOW runs to start")
        time.sleep(3.0)  # they hold every trainer, with a checkpoint or so saved
        due = time.time() + deadline_s
        highs = tm.submit_many_sync([_request(f"nightly-{i}", TaskPriority.HIGH, marks,
                                              high_epochs, rows, deadline=due)
                                     for i in range(high_tasks)])
        done_highs = tm.wait_all_sync([t.id for t in highs], timeout_s=3600)
        done_lows = tm.wait_all_sync([t.id for t in lows], timeout_s=3600)
        attempts = {t.id: tm.attempts_sync(t.id) for t in done_lows}
        errors = runtime_errors(runtime, began)
    finally:
        runtime.shutdown()
        disconnect()
    last = max(t.finished_at.timestamp() for t in done_highs if t.finished_at)
    waits = sorted((t.started_at - t.created_at).total_seconds() for t in done_highs
                   if t.started_at)
    low_rows = [_low(t, attempts[t.id], marks, low_epochs) for t in done_lows]
    return {"preemption": preemption, "deadline_met": last <= due and all(
                t.status is TaskStatus.COMPLETED for t in done_highs),
            "margin_s": due - last, "high_waits_s": waits, "lows": low_rows,
            "redone_s": sum(r["redone_s"] for r in low_rows),
            "preemptions": sum(r["preemptions"] for r in low_rows),
            "lows_once": all(r["once"] for r in low_rows), "estimate_errors": errors,
            "epoch_s": _epoch_s(marks)}


def _low(task: Any, attempts: list[Any], marks: Path, epochs: int) -> dict[str, Any]:
    """What one LOW task did: its epochs (each run to the end once, or again after a
    preemption: those since its last checkpoint), its completions, and the seconds
    preemption cost it: epochs run again, the epoch under way when it was stopped, and the
    setup (the data made again) of every attempt after the first."""
    rows = [line.split() for line in
            (marks / f"{task.id}.epochs").read_text().splitlines() if line]
    runs: dict[int, list[float]] = {}
    lost = 0.0
    for _attempt, epoch, seconds in rows:
        if epoch == "lost":
            lost += float(seconds)
        else:
            runs.setdefault(int(epoch), []).append(float(seconds))
    again = sum(sum(times[1:]) for times in runs.values())
    done_path = marks / f"{task.id}.done"
    completions = len(done_path.read_text().split()) if done_path.exists() else 0
    setups = [line.split() for line in
              (marks / f"{task.id}.setup").read_text().splitlines() if line]
    resetup = sum(float(s) for a, s in setups if a != "0")
    redone_epochs = sum(len(times) - 1 for times in runs.values())
    return {"status": task.status.value, "attempts": len(attempts),
            "preemptions": task.preemptions, "completions": completions,
            "once": task.status is TaskStatus.COMPLETED and completions == 1
            and sorted(runs) == list(range(epochs))
            and redone_epochs <= CHECKPOINT_EVERY * task.preemptions,
            "redone_epochs": redone_epochs, "redone_s": again + lost + resetup}


def _epoch_s(marks: Path) -> float:
    """The median seconds of an epoch, over every epoch of the side."""
    times = [float(line.split()[2]) for path in marks.glob("*.epochs")
             for line in path.read_text().splitlines() if line and " lost " not in line]
    return statistics.median(times) if times else 0.0


def runtime_errors(runtime: Any, since: float) -> dict[str, Any]:
    """The median absolute percentage error of the run-time predictions of the attempts
    completed since ``since`` (from the store), and how many there were."""
    from ..store import open_store

    store = open_store(runtime.settings.store_url)
    try:
        rows = store.estimate_errors(since)
    finally:
        store.close()
    return _mape(rows)


def _mape(rows: list[tuple[str, float, float]]) -> dict[str, Any]:
    errors = [abs(predicted - actual) / actual for _type, predicted, actual in rows]
    return {"n": len(errors), "mape": statistics.median(errors) if errors else None}


def _wait(ready: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def run_nightly(trainers: int = 2, low_epochs: int = 600, high_tasks: int = 4,
                high_epochs: int = 8, rows: int = 150_000, deadline_s: float = 45.0,
                grace_s: float = 10.0) -> dict[str, Any]:
    """Both sides, with preemption first."""
    data_dir = Path(tempfile.mkdtemp(prefix="raytasks-nightly-"))
    sides = [_side(p, trainers, low_epochs, high_tasks, high_epochs, rows, deadline_s,
                   grace_s, data_dir) for p in (True, False)]
    return {"trainers": trainers, "low_epochs": low_epochs, "high_tasks": high_tasks,
            "high_epochs": high_epochs, "rows": rows, "deadline_s": deadline_s,
            "grace_s": grace_s, "sides": sides}


def format_nightly(f: dict[str, Any]) -> str:
    lines = [f"nightly batch: {f['high_tasks']} HIGH retrainings ({f['high_epochs']} epochs) "
             f"due {f['deadline_s']:g} s after they arrive, on {f['trainers']} trainer "
             f"executors held by LOW runs of {f['low_epochs']} epochs "
             f"({f['rows']:,} rows x 158 features; grace {f['grace_s']:g} s)"]
    for side in f["sides"]:
        met = "met" if side["deadline_met"] else "MISSED"
        margin = side["margin_s"]
        by = f"{margin:.1f} s to spare" if margin >= 0 else f"{-margin:.1f} s late"
        waits = side["high_waits_s"]
        errors = side["estimate_errors"]
        mape = "n/a" if errors["mape"] is None else f"{100 * errors['mape']:.1f} %"
        lines += [
            f"  {'with' if side['preemption'] else 'without'} preemption:",
            f"    deadline {met}, {by}",
            f"    HIGH waits: median {statistics.median(waits):.1f} s, max {max(waits):.1f} s",
            f"    LOW preempted {side['preemptions']} time(s), compute redone "
            f"{side['redone_s']:.1f} s ({sum(r['redone_epochs'] for r in side['lows'])} "
            f"epochs run again; a checkpoint every {CHECKPOINT_EVERY} epochs, "
            f"{side['epoch_s']:.2f} s each)",
            f"    every LOW task completed once, every epoch run to the end: "
            f"{'yes' if side['lows_once'] else 'NO'}",
            f"    run-time prediction error (median APE over {errors['n']} attempts): {mape}"]
    return "\n".join(lines)


def as_json(f: dict[str, Any]) -> str:
    return json.dumps(f, indent=2, default=str)
