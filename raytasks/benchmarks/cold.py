"""``raytasks bench cold``: how long tasks submitted together on an idle raytasks wait to start,
from pools that start empty (``warm_workers_per_type=0``) beside pools with their default warm
executors (one for ``prediction``), in the same run, on the same embedded Ray.

Each side is a raytasks of its own (a namespace and a temporary data directory), brought up
and left idle until every executor it started is placed and ``settle_s`` has passed; then
``tasks`` small real predictions (synthetic bars, a year each) are submitted in one
``submit_many`` and each one's wait is read from the store: submit to RUNNING
(``started_at - created_at``) and submit to finished. The cold side runs first; the
prediction code is imported in this process beforehand, so neither side reads it from disk
cold. Both sides keep every other setting at its default (at most ``max_workers_per_type``
executors per type, 2), so later tasks of the burst also wait for earlier ones.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from ..api import TaskManager
from ..models import TaskCreateRequest, TaskStatus
from ..runtime import ENGINE, connect, disconnect
from ..settings import Settings

CODES = ["000001.SZ", "600000.SH", "300750.SZ", "600519.SH", "000002.SZ", "601318.SH"]
RANGE = {"start": "2023-01-03", "end": "2023-12-29"}


def _settled(runtime: Any, warm: int, timeout_s: float = 120.0) -> None:
    """Wait until the prediction pool holds its ``warm`` executors and none is starting."""
    deadline = time.monotonic() + timeout_s
    while True:
        pools: dict[str, dict[str, Any]] = ray.get(
            runtime.handle(ENGINE).pools_info.remote())
        if pools["prediction"]["placed"] >= warm and \
                all(p["starting"] == 0 and p["retiring"] == 0 for p in pools.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pools did not settle: {pools}")
        time.sleep(0.1)


def _burst(label: str, warm_workers: int | None, tasks: int, data_dir: Path,
           settle_s: float) -> dict[str, Any]:
    """One side: raytasks up and idle, then ``tasks`` predictions at once."""
    settings = Settings(namespace=f"raytasks-bench-{label}", data_dir=data_dir / label,
                        ray_dashboard=False, warm_workers_per_type=warm_workers)
    warm = settings.for_type("prediction").warm_workers or 0
    runtime = connect(settings=settings)
    try:
        _settled(runtime, warm)
        time.sleep(settle_s)  # the processes just started go quiet: an idle system
        tm = TaskManager(runtime)
        submitted = tm.submit_many_sync([TaskCreateRequest(
            name=f"{label}-{i}", task_type="prediction",
            parameters={"kind": "price", "stock_code": CODES[i % len(CODES)], **RANGE})
            for i in range(tasks)])
        done = tm.wait_all_sync([t.id for t in submitted], timeout_s=300)
    finally:
        runtime.shutdown()
        disconnect()
    failed = [t.id for t in done if t.status is not TaskStatus.COMPLETED]
    if failed:
        raise RuntimeError(f"{label}: tasks did not complete: {failed}")
    rows = []
    for t in done:
        assert t.started_at is not None and t.finished_at is not None
        rows.append({"start_s": (t.started_at - t.created_at).total_seconds(),
                     "done_s": (t.finished_at - t.created_at).total_seconds()})
    rows.sort(key=lambda r: r["start_s"])
    return {"warm_workers": warm, "max_workers": settings.for_type("prediction").max_workers,
            "tasks": rows}


def run_cold(tasks: int = 5, settle_s: float = 2.0) -> dict[str, Any]:
    """Both sides, cold first; the figures of each task, sorted by its wait to start."""
    from ..handlers import prediction  # noqa: F401  (the numerics' files, read once for both)

    data_dir = Path(tempfile.mkdtemp(prefix="raytasks-cold-"))
    try:
        cold = _burst("cold", 0, tasks, data_dir, settle_s)
        warm = _burst("warm", None, tasks, data_dir, settle_s)
    finally:
        ray.shutdown()
    return {"tasks": tasks, "cold": cold, "warm": warm}


def format_cold(f: dict[str, Any]) -> str:
    cold, warm = f["cold"], f["warm"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:6.1f}x" if b > 0 else "     -"

    lines = [
        f"raytasks cold pools: {f['tasks']} predictions submitted together on an idle "
        f"system, empty pools (warm_workers=0) beside the default warm pools "
        f"(prediction warm_workers={warm['warm_workers']}), max_workers="
        f"{warm['max_workers']}, same run; each task's wait from submit",
        "  task   to RUNNING: cold     warm   cold/warm   to finished: cold     warm   "
        "cold/warm",
    ]
    for i, (c, w) in enumerate(zip(cold["tasks"], warm["tasks"], strict=True), 1):
        lines.append(f"  {i:4d}               {c['start_s']:6.2f} s {w['start_s']:6.2f} s "
                     f"{ratio(c['start_s'], w['start_s'])}                {c['done_s']:6.2f} s "
                     f"{w['done_s']:6.2f} s {ratio(c['done_s'], w['done_s'])}")
    for name, pick in (("median", statistics.median), ("max", max)):
        cs, ws = pick(r["start_s"] for r in cold["tasks"]), \
            pick(r["start_s"] for r in warm["tasks"])
        cd, wd = pick(r["done_s"] for r in cold["tasks"]), \
            pick(r["done_s"] for r in warm["tasks"])
        lines.append(f"  {name:6s}             {cs:6.2f} s {ws:6.2f} s {ratio(cs, ws)}"
                     f"                {cd:6.2f} s {wd:6.2f} s {ratio(cd, wd)}")
    lines.append(f"  first task to RUNNING: cold {cold['tasks'][0]['start_s']:.2f} s, warm "
                 f"{warm['tasks'][0]['start_s']:.2f} s (target: warm <= 1 s)")
    return "\n".join(lines)
