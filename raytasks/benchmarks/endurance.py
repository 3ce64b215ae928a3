"""The long run: N no-op tasks through the system with retention on, and the memory of
every system actor and the store's size along the way.

Tasks go in through the fastest path (``submit_many`` in chunks), with at most
``window`` unfinished at once; finished tasks older than ``retention_s`` are pruned by
the manager's maintenance (every minute), events likewise. Every ``points`` of the run the
resident memory (RSS) of the manager, tracker, notifier and engine processes, the tasks
left in the store and its size on disk are read. What the run checks: the actors' RSS at
the end against after the first 10 % (target: within 10 %), and the store bounded (the
tasks it holds stay near what ``retention_s`` keeps, not what went through).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from ..api import TaskManager, register_task_type
from ..models import TaskCreateRequest, TaskStatus
from ..runtime import Runtime, connect
from ..runtime.actors import ENGINE, MANAGER, NOTIFIER, TRACKER
from ..settings import Settings, TaskTypeSettings
from .core import noop
from .processes import rss_mb

ROLES = {"manager": MANAGER, "tracker": TRACKER, "notifier": NOTIFIER, "engine": ENGINE}


def system_pids(runtime: Runtime) -> dict[str, int]:
    """The process id of each system actor, by role."""
    refs: dict[str, Any] = {
        name: runtime.handle(role).__ray_call__.remote(lambda _self: os.getpid())
        for name, role in ROLES.items()}
    found: list[Any] = ray.get(list(refs.values()), timeout=60)
    return {name: int(pid) for name, pid in zip(refs, found, strict=True)}


def _trim(_self: Any) -> None:
    import gc

    from ..runtime.manager import give_back_heap

    gc.collect()
    give_back_heap()


def trimmed_rss_mb(runtime: Runtime, pids: dict[str, int]) -> dict[str, float]:
    """Each actor's RSS after a garbage collection and ``malloc_trim(0)``: what its live
    objects hold, without the heap the allocator keeps from an earlier peak (a leak stays;
    a high-water mark goes)."""
    ray.get([runtime.handle(role).__ray_call__.remote(_trim) for role in ROLES.values()],
            timeout=120)
    return system_rss_mb(pids)


def system_rss_mb(pids: dict[str, int]) -> dict[str, float]:
    return {name: rss_mb(pid) for name, pid in pids.items()}


def store_figures(settings: Settings) -> dict[str, float]:
    """Rows of tasks, attempts, progress and events in the store, and its size on disk
    (MB; SQLite: the file and its write-ahead log; PostgreSQL: the database)."""
    import sqlalchemy as sa

    assert settings.store_url is not None
    engine = sa.create_engine(settings.store_url)
    try:
        with engine.connect() as conn:
            rows = {table: float(conn.execute(sa.text(
                f"SELECT count(*) FROM rt_{table}")).scalar_one())
                for table in ("tasks", "attempts", "progress", "events")}
            if engine.dialect.name == "postgresql":
                size = conn.execute(sa.text(
                    "SELECT pg_database_size(current_database())")).scalar_one() / 2**20
            else:
                db = Path(settings.store_url.removeprefix("sqlite:///"))
                size = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal"))
                           if p.exists()) / 2**20
    finally:
        engine.dispose()
    return {**rows, "mb": float(size)}


def run_endurance(tasks: int = 1_000_000, retention_s: float = 30.0, chunk: int = 1000,
                  window: int = 20_000, points: int = 20, workers: int = 2,
                  store_url: str | None = None, runtime: Runtime | None = None,
                  echo: Any = None) -> dict[str, Any]:
    """Run ``tasks`` no-op tasks; returns the curve and the figures.

    ``runtime``: a running raytasks to use (its retention settings are its own), else one
    is started with ``retention_s`` and stopped at the end. ``echo`` (a callable) is
    given each point of the curve as it is read.
    """
    own = runtime is None
    if runtime is None:
        data_dir = tempfile.mkdtemp(prefix="raytasks-endurance-")
        settings = Settings(namespace="raytasks-endurance", data_dir=data_dir,
                            store_url=store_url, ray_dashboard=False,
                            task_retention_s=retention_s, event_retention_s=retention_s,
                            max_queue_size=max(100_000, 2 * window),
                            warm_workers_per_type=0,
                            task_types={"noop": TaskTypeSettings(workers=workers)})
        runtime = connect(settings=settings)
    try:
        register_task_type("noop", noop, runtime=runtime)
        tm = TaskManager(runtime)
        pids = system_pids(runtime)
        every = max(1, tasks // points)
        curve: list[dict[str, Any]] = []
        in_flight: list[list[str]] = []
        unfinished, failed, submitted, started = 0, 0, 0, time.monotonic()
        next_point = every

        def read(done: int) -> None:
            point = {"tasks": done, "s": time.monotonic() - started,
                     "rss_mb": system_rss_mb(pids), "store": store_figures(runtime.settings)}
            curve.append(point)
            if echo is not None:
                echo(point)

        read(0)
        while submitted < tasks or in_flight:
            if submitted < tasks and unfinished < window:
                n = min(chunk, tasks - submitted)
                ids = [t.id for t in tm.submit_many_sync(
                    [TaskCreateRequest(name="noop", task_type="noop", max_retries=0,
                                       parameters={}) for _ in range(n)])]
                in_flight.append(ids)
                submitted, unfinished = submitted + n, unfinished + n
                continue
            ids = in_flight.pop(0)
            done = tm.wait_all_sync(ids, timeout_s=600)
            failed += sum(t.status is not TaskStatus.COMPLETED for t in done)
            unfinished -= len(ids)
            finished = submitted - unfinished
            if finished >= next_point or (not in_flight and submitted >= tasks):
                read(finished)
                next_point += every
        elapsed = time.monotonic() - started
        out = figures(curve, tasks, failed, elapsed, runtime.settings)
        out["rss_trimmed_mb"] = trimmed_rss_mb(runtime, pids)
        return out
    finally:
        if own:
            runtime.shutdown()
            ray.shutdown()


def figures(curve: list[dict[str, Any]], tasks: int, failed: int, elapsed: float,
            settings: Settings) -> dict[str, Any]:
    """The run's figures from its curve: RSS after 10 % and at the end, their ratio per
    actor, and the store's peak and final size."""
    tenth = next(p for p in curve if p["tasks"] >= tasks / 10)
    last = curve[-1]
    ratio = {name: last["rss_mb"][name] / max(1e-9, tenth["rss_mb"][name])
             for name in last["rss_mb"]}
    return {
        "tasks": tasks, "failed": failed, "seconds": elapsed, "tasks_per_s": tasks / elapsed,
        "retention_s": settings.task_retention_s, "curve": curve,
        "rss_at_tenth_mb": tenth["rss_mb"], "rss_at_end_mb": last["rss_mb"],
        "rss_ratio": ratio,
        "store_peak_tasks": max(p["store"]["tasks"] for p in curve),
        "store_peak_mb": max(p["store"]["mb"] for p in curve),
        "store_end_tasks": last["store"]["tasks"], "store_end_mb": last["store"]["mb"],
    }


def format_point(p: dict[str, Any]) -> str:
    rss = " ".join(f"{name} {mb:6.1f}" for name, mb in p["rss_mb"].items())
    s = p["store"]
    return (f"  {p['tasks']:>9,} tasks {p['s']:7.0f} s | RSS MB {rss} | store "
            f"{s['tasks']:>8,.0f} tasks {s['attempts']:>8,.0f} attempts {s['progress']:>8,.0f} "
            f"progress {s['events']:>8,.0f} events {s['mb']:6.1f} MB")


def format_endurance(f: dict[str, Any]) -> str:
    worst = max(f["rss_ratio"].values())
    lines = [
        f"raytasks endurance: {f['tasks']:,} no-op tasks (submit_many), retention "
        f"{f['retention_s']:g} s, {f['seconds']:.0f} s ({f['tasks_per_s']:.0f} tasks/s), "
        f"{f['failed']} not completed",
        *[format_point(p) for p in f["curve"]],
        "  RSS at the end / after the first 10 % (target <= 1.10): " + ", ".join(
            f"{name} {r:.3f} ({f['rss_at_tenth_mb'][name]:.1f} -> "
            f"{f['rss_at_end_mb'][name]:.1f} MB)" for name, r in f["rss_ratio"].items())
        + f"; worst {worst:.3f}",
        "  RSS at the end after gc and malloc_trim (live memory, without the heap kept "
        "from peaks): " + ", ".join(f"{name} {mb:.1f} MB"
                                    for name, mb in f.get("rss_trimmed_mb", {}).items()),
        f"  store: at most {f['store_peak_tasks']:,.0f} tasks and {f['store_peak_mb']:.1f} MB"
        f" while {f['tasks']:,} went through; {f['store_end_tasks']:,.0f} tasks, "
        f"{f['store_end_mb']:.1f} MB at the end",
    ]
    return "\n".join(lines)
