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

import numpy as np
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


def run_backtest(fasts: int = 20, slows: int = 40, start: str = "2014-01-01",
                 end: str = "2024-12-31") -> dict[str, Any]:
    """SMA sweep on one stock: backtests/s on 1 worker, on 2 Ray workers, and a naive loop."""
    from .handlers.backtests import run_pieces
    from .quant import backtest as bt
    from .quant.costs import CostModel
    from .quant.synthetic import generate_bars

    if not ray.is_initialized():
        ray.init(namespace="raytasks-bench", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    market = bt.Market.from_bars(generate_bars(["000001.SZ"], start, end))
    pairs = bt.grid(list(range(2, 2 + 2 * fasts, 2)), list(range(10, 10 + 10 * slows, 10)))
    costs = CostModel()
    bt.sweep_sma(market, pairs[:4])  # compile the kernel
    run_pieces(market, [pairs[:8], pairs[8:16]], 1e6, costs)  # start two Ray workers

    start_t = time.perf_counter()
    bt.sweep_sma(market, pairs)
    one = len(pairs) / (time.perf_counter() - start_t)
    start_t = time.perf_counter()
    run_pieces(market, [pairs[0::2], pairs[1::2]], 1e6, costs)
    two = len(pairs) / (time.perf_counter() - start_t)

    # the reference: the same kernel as plain, uncompiled Python (a naive implementation)
    naive_pairs = pairs[:12]
    start_t = time.perf_counter()
    for fast, slow in naive_pairs:
        target = bt.sma_crossover(market.close, fast, slow)
        trades = np.zeros((len(target), 5))
        r = market.rates
        bt._kernel.py_func(market.open, market.close, market.limit_up, market.limit_down,
                           market.suspended, target, 1e6, costs.commission_rate,
                           costs.commission_min, r["stamp_buy"], r["stamp_sell"],
                           r["transfer_amount"], r["transfer_share"], 100, 0.0, trades)
    naive = len(naive_pairs) / (time.perf_counter() - start_t)
    return {"bars": len(market.close), "combinations": len(pairs),
            "one_worker_per_s": one, "two_workers_per_s": two, "speedup": two / one,
            "naive_per_s": naive, "ratio_vs_naive": one / naive}


def format_backtest(f: dict[str, Any]) -> str:
    return "\n".join([
        f"raytasks backtest benchmark (SMA sweep, {f['combinations']} combinations, "
        f"{f['bars']} daily bars, A-share rules)",
        f"  1 worker            : {f['one_worker_per_s']:9.0f} backtests/s",
        f"  2 workers (Ray)     : {f['two_workers_per_s']:9.0f} backtests/s "
        f"(speed-up {f['speedup']:.2f}x)",
        f"  naive Python loop   : {f['naive_per_s']:9.1f} backtests/s "
        f"(raytasks {f['ratio_vs_naive']:.0f}x faster)",
    ])
