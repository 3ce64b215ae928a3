"""Idle footprint: the memory (PSS) of every process an idle raytasks started, beside
an idle bare Ray measured the same way in the same run.

PSS (proportional set size, /proc/<pid>/smaps_rollup) shares pages between processes
fairly, so the sums compare. Both sides are measured after a warm-up (one task run)
and, for raytasks, after its executor pools' idle timeout.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import ray

from .processes import descendants, pss_mb


@ray.remote
def _warm() -> int:
    return os.getpid()


def _measure_bare(settle_s: float) -> tuple[float, int]:
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        ray.get([_warm.remote() for _ in range(4)])
        time.sleep(settle_s)
        pids = descendants(os.getpid())
        return pss_mb(pids), len(pids)
    finally:
        ray.shutdown()


def _measure_raytasks(idle_timeout_s: float, settle_s: float,
                      warm_workers: int | None = 0) -> tuple[float, int]:
    from ..api import TaskManager, register_task_type
    from ..models import TaskCreateRequest
    from ..runtime import connect
    from ..settings import Settings, TaskTypeSettings
    from .core import noop

    settings = Settings(namespace="raytasks-footprint",
                        data_dir=tempfile.mkdtemp(prefix="raytasks-footprint-"),
                        idle_timeout_s=idle_timeout_s, ray_dashboard=False,
                        warm_workers_per_type=warm_workers,
                        task_types={"noop": TaskTypeSettings(min_workers=0, max_workers=2)})
    runtime = connect(settings=settings)
    try:
        register_task_type("noop", noop, runtime=runtime)
        tm = TaskManager(runtime)
        tm.wait_all_sync([tm.submit_sync(TaskCreateRequest(name="warm", task_type=t,
                                                           parameters=p)).id
                          for t, p in [("noop", {}), ("prediction",
                                                      {"stock_code": "000001.SZ"})]],
                         timeout_s=300)
        time.sleep(idle_timeout_s + settle_s)  # the pools shrink to their minimum
        pids = descendants(os.getpid())
        return pss_mb(pids), len(pids)
    finally:
        runtime.shutdown()
        ray.shutdown()


def run_footprint(idle_timeout_s: float = 10.0, settle_s: float = 5.0) -> dict[str, Any]:
    """Bare Ray, raytasks with no warm executor (its floor), and raytasks as it comes (one
    warm ``prediction`` executor, its libraries loaded, so an interactive prediction starts
    at once: what it costs is printed apart)."""
    bare, bare_n = _measure_bare(settle_s)
    ours, ours_n = _measure_raytasks(idle_timeout_s, settle_s, warm_workers=0)
    warm, warm_n = _measure_raytasks(idle_timeout_s, settle_s, warm_workers=None)
    return {"bare_ray_mb": bare, "bare_ray_processes": bare_n, "raytasks_mb": ours,
            "raytasks_processes": ours_n, "ratio": ours / bare, "warm_mb": warm,
            "warm_processes": warm_n, "warm_ratio": warm / bare}


def format_footprint(f: dict[str, Any]) -> str:
    return "\n".join([
        "raytasks idle footprint (PSS of every process started, after warm-up and the idle "
        "timeout; bare Ray measured the same way in this run)",
        f"  raytasks : {f['raytasks_mb']:7.0f} MB in {f['raytasks_processes']} processes "
        "(warm_workers_per_type=0: no idle executor)",
        f"  bare Ray : {f['bare_ray_mb']:7.0f} MB in {f['bare_ray_processes']} processes",
        f"  ratio    : {f['ratio']:7.2f} (target <= 1.5)",
        f"  default  : {f['warm_mb']:7.0f} MB in {f['warm_processes']} processes, ratio "
        f"{f['warm_ratio']:.2f}: one warm prediction executor "
        f"(+{f['warm_mb'] - f['raytasks_mb']:.0f} MB) so an interactive prediction starts "
        "at once",
    ])
