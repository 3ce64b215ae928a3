"""Benchmarks: raytasks beside a reference measured in the same run, as a ratio.

``core``: no-op tasks end to end (durable store, mixed priorities, leases,
results) against the same count of bare ``@ray.remote`` tasks, plus
submit-to-start latency on an idle system.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import ray

from .api import TaskManager, register_task_type
from .context import TaskExecutionContext
from .models import TaskCreateRequest, TaskPriority, TaskStatus
from .runtime import Runtime, connect
from .settings import Settings


def noop(params: dict[str, Any], ctx: TaskExecutionContext) -> float:
    """Returns the time it started, so the benchmark can measure submit-to-start."""
    return time.time()


@ray.remote
def _bare_noop() -> float:
    return time.time()


def bare_ray_rate(count: int) -> float:
    """Tasks per second of ``count`` bare Ray tasks, submitted and awaited together."""
    ray.get([_bare_noop.remote() for _ in range(min(count, 200))])  # warm the workers
    start = time.perf_counter()
    ray.get([_bare_noop.remote() for _ in range(count)])
    return count / (time.perf_counter() - start)


def raytasks_rate(tm: TaskManager, count: int, chunk: int = 500) -> float:
    """Tasks per second through raytasks: created, stored, queued, leased, run, stored."""
    priorities = list(TaskPriority)
    start = time.perf_counter()
    ids: list[str] = []
    for offset in range(0, count, chunk):
        batch = [TaskCreateRequest(name="noop", task_type="noop",
                                   priority=priorities[(offset + i) % 3], max_retries=0)
                 for i in range(min(chunk, count - offset))]
        ids += [t.id for t in tm.submit_many_sync(batch)]
    done = tm.wait_all_sync(ids, timeout_s=600)
    elapsed = time.perf_counter() - start
    failed = [t.id for t in done if t.status is not TaskStatus.COMPLETED]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark tasks did not complete")
    return count / elapsed


def idle_latency_ms(tm: TaskManager, samples: int) -> list[float]:
    """Submit-to-start latency of single tasks on an otherwise idle system."""
    out = []
    for _ in range(samples):
        t0 = time.time()
        task = tm.submit_sync(TaskCreateRequest(name="latency", task_type="noop",
                                                priority=TaskPriority.HIGH))
        done = tm.wait_sync(task.id, timeout_s=30)
        out.append((float(done.result) - t0) * 1000.0)
    return out


def run_core(tasks: int = 5000, samples: int = 200, workers: int = 2,
             runtime: Runtime | None = None) -> dict[str, Any]:
    """Run the core benchmark and return its figures."""
    owned = runtime is None
    if runtime is None:
        data_dir = tempfile.mkdtemp(prefix="raytasks-bench-")
        runtime = connect(settings=Settings(namespace="raytasks-bench", data_dir=data_dir,
                                            workers_per_type=0))
    register_task_type("noop", noop, workers=workers, max_retries=0, runtime=runtime)
    tm = TaskManager(runtime)
    raytasks_rate(tm, min(tasks, 500))  # warm-up: executors started, code paths hot
    idle_latency_ms(tm, 10)
    figures: dict[str, Any] = {"tasks": tasks, "executors": workers}
    figures["raytasks_tasks_per_s"] = raytasks_rate(tm, tasks)
    figures["bare_ray_tasks_per_s"] = bare_ray_rate(tasks)
    figures["ratio"] = figures["raytasks_tasks_per_s"] / figures["bare_ray_tasks_per_s"]
    lat = sorted(idle_latency_ms(tm, samples))
    figures["latency_samples"] = samples
    figures["latency_p50_ms"] = statistics.median(lat)
    figures["latency_p99_ms"] = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    if owned:
        runtime.shutdown()
    return figures


def format_core(f: dict[str, Any]) -> str:
    return "\n".join([
        f"raytasks core benchmark ({f['tasks']} no-op tasks, mixed priorities, durable store, "
        f"{f['executors']} executors)",
        f"  raytasks end to end : {f['raytasks_tasks_per_s']:9.0f} tasks/s",
        f"  bare @ray.remote    : {f['bare_ray_tasks_per_s']:9.0f} tasks/s",
        f"  ratio               : {f['ratio']:9.2f}  (target >= 1.0)",
        f"  idle submit-to-start: p50 {f['latency_p50_ms']:.2f} ms, "
        f"p99 {f['latency_p99_ms']:.2f} ms over {f['latency_samples']} tasks (target p50 <= 3 ms)",
    ])
