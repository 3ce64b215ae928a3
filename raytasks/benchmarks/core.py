"""The core benchmark: every path a user feels, each beside bare Ray in the same run.

No-op tasks, durable store, two executors. Paths:

- ``batch``: ``submit_many`` in chunks of 500, then ``wait_all`` (bare Ray: ``.remote`` x N,
  then one ``ray.get``; twice each, in the order raytasks, bare, bare, raytasks);
- ``sequential``: one ``submit_sync`` per task, then ``wait_all``;
- ``concurrent``: N concurrent ``await tm.submit`` and N concurrent ``await tm.wait`` from
  one event loop (bare Ray: N concurrent awaited refs);
- ``acks``: N sequential ``await tm.submit`` (acknowledgements per second, ack p50);
- ``round_trip``: submit then wait, one task at a time (p50/p99; bare Ray: ``ray.get(f.remote())``,
  Celery: ``delay().get()``; the paths take turns of 20, so each meets the same background),
  and the CPU that each costs, summed over this process and every process it started (on
  2 cores one task's latency is bound by the CPU its hops take, not by waiting);
- ``idle_start``: submit-to-start on an idle system (p50; bare Ray: ``f.remote()``, taking
  turns);
- ``overtake``: with a backlog, the share of (HIGH, LOW) pairs in which HIGH, queued
  later, started first.

``--celery`` adds Celery + Redis measured the same way in the same run (pip install celery
redis; the ``redis-server`` binary).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import ray

from ..api import TaskManager, register_task_type
from ..context import TaskExecutionContext
from ..models import Task, TaskCreateRequest, TaskPriority, TaskStatus
from ..runtime import Runtime, connect
from ..settings import Settings
from .processes import cpu_ms_per_task, cpu_s_by_process, descendants


def noop(params: dict[str, Any], ctx: TaskExecutionContext) -> float:
    """Returns the time it started, so the benchmark can measure submit-to-start."""
    if params.get("sleep_s"):
        time.sleep(params["sleep_s"])
    return time.time()


@ray.remote
def _bare_noop() -> float:
    return time.time()


def _req(priority: TaskPriority = TaskPriority.HIGH, **params: Any) -> TaskCreateRequest:
    return TaskCreateRequest(name="noop", task_type="noop", priority=priority, max_retries=0,
                             parameters=params)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _check(tasks: list[Any]) -> None:
    failed = [t.id for t in tasks if t.status is not TaskStatus.COMPLETED]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark tasks did not complete")


def batch_rate(tm: TaskManager, count: int, chunk: int = 500) -> float:
    priorities = list(TaskPriority)
    start = time.perf_counter()
    ids: list[str] = []
    for offset in range(0, count, chunk):
        ids += [t.id for t in tm.submit_many_sync(
            [_req(priorities[(offset + i) % 3]) for i in range(min(chunk, count - offset))])]
    _check(tm.wait_all_sync(ids, timeout_s=600))
    return count / (time.perf_counter() - start)


def bare_batch_rate(count: int) -> float:
    start = time.perf_counter()
    ray.get([_bare_noop.remote() for _ in range(count)])
    return count / (time.perf_counter() - start)


def batch_rates(tm: TaskManager, count: int) -> tuple[float, float]:
    """``batch_rate`` and ``bare_batch_rate`` in the order ABBA, each over its two runs: a
    slow moment of the machine falls on both alike."""
    seconds = {True: 0.0, False: 0.0}
    for ours in (True, False, False, True):
        rate = batch_rate(tm, count) if ours else bare_batch_rate(count)
        seconds[ours] += count / rate
    return 2 * count / seconds[True], 2 * count / seconds[False]


def sequential_rate(tm: TaskManager, count: int) -> float:
    start = time.perf_counter()
    ids = [tm.submit_sync(_req()).id for _ in range(count)]
    _check(tm.wait_all_sync(ids, timeout_s=600))
    return count / (time.perf_counter() - start)


def concurrent_rate(tm: TaskManager, count: int) -> float:
    async def run() -> float:
        start = time.perf_counter()
        tasks = await asyncio.gather(*(tm.submit(_req()) for _ in range(count)))
        done = await asyncio.gather(*(tm.wait(t.id, timeout_s=600) for t in tasks))
        _check(list(done))
        return count / (time.perf_counter() - start)
    return asyncio.run(run())


def bare_concurrent_rate(count: int) -> float:
    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(_bare_noop.remote() for _ in range(count)))
        return count / (time.perf_counter() - start)
    return asyncio.run(run())


def ack_figures(tm: TaskManager, count: int) -> tuple[float, float]:
    """Sequential awaited submits: acknowledgements per second and the ack p50 (ms)."""
    async def run() -> tuple[float, float]:
        times = []
        ids = []
        start = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            ids.append((await tm.submit(_req())).id)
            times.append((time.perf_counter() - t0) * 1000)
        rate = count / (time.perf_counter() - start)
        await tm.wait_all(ids, timeout_s=600)
        return rate, statistics.median(times)
    return asyncio.run(run())


def round_trip(tm: TaskManager) -> Task:
    """Submit one task and wait for it; the finished Task."""
    return tm.wait_sync(tm.submit_sync(_req()).id, timeout_s=30)


def interleaved_round_trips(paths: dict[str, Callable[[], object]], samples: int
                            ) -> dict[str, tuple[list[float], dict[str, float]]]:
    """Per path: ``samples`` round-trip times (ms), and the CPU per round trip by process
    kind. The paths take turns, ``ROUND_TRIP_TURN`` round trips each (in a rotating
    order), so a burst of background work (Ray's own agents, say) falls on each alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, defaultdict[str, float]] = {name: defaultdict(float) for name in paths}
    names, others = list(paths), descendants(os.getpid())
    for turn in range(0, samples, ROUND_TRIP_TURN):
        n = min(ROUND_TRIP_TURN, samples - turn)
        k = turn // ROUND_TRIP_TURN % len(names)
        for name in names[k:] + names[:k]:
            trip, before = paths[name], cpu_s_by_process(others, own_last=True)
            for _ in range(n):
                t0 = time.perf_counter()
                trip()
                times[name].append((time.perf_counter() - t0) * 1000)
            after = cpu_s_by_process(others)
            for kind, ms in cpu_ms_per_task(before, after, samples).items():
                cpu[name][kind] += ms
    return {name: (times[name], dict(cpu[name])) for name in paths}


def idle_start_ms(tm: TaskManager, samples: int) -> tuple[list[float], list[float]]:
    """Submit-to-start latency of single tasks on an otherwise idle system (5 ms idle
    before each), raytasks' and bare Ray's (``f.remote()``) taking turns."""
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(samples):
        for out, run in ((ours, lambda: round_trip(tm).result),
                         (bare, lambda: ray.get(_bare_noop.remote()))):
            time.sleep(0.005)
            t0 = time.time()
            started = float(run())
            out.append((started - t0) * 1000.0)
    return ours, bare


def overtake_share(tm: TaskManager, count: int = 100, executors: int = 2) -> float:
    """With a backlog, the share of (HIGH, LOW) pairs in which HIGH started first.

    A blocker per executor is running first (each started before the next is sent), so
    the LOW and then the HIGH tasks queue up behind busy executors: a backlog.
    """
    blockers = []
    for _ in range(executors):
        blockers += tm.submit_many_sync([_req(TaskPriority.HIGH, sleep_s=0.3)])
        _wait_started(tm, blockers[-1].id)
    lows = tm.submit_many_sync([_req(TaskPriority.LOW, sleep_s=0.002) for _ in range(count)])
    highs = tm.submit_many_sync([_req(TaskPriority.HIGH, sleep_s=0.002)
                                 for _ in range(count)])
    done = tm.wait_all_sync([t.id for t in blockers + lows + highs], timeout_s=600)
    started = {t.id: t.started_at.timestamp() for t in done if t.started_at is not None}
    low_starts = [started[t.id] for t in lows]
    wins = sum(1 for high in highs for low in low_starts if started[high.id] < low)
    return wins / (count * count)


def _wait_started(tm: TaskManager, task_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while tm.get_task_sync(task_id).status is TaskStatus.PENDING:
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark task {task_id} did not start")
        time.sleep(0.002)


#: Round trips a path makes in a row before the next path's turn.
ROUND_TRIP_TURN = 20


def run_core(tasks: int = 5000, samples: int = 200, workers: int = 2, celery: bool = False,
             runtime: Runtime | None = None) -> dict[str, Any]:
    """Run every path and return the figures."""
    owned = runtime is None
    if runtime is None:
        data_dir = tempfile.mkdtemp(prefix="raytasks-bench-")
        runtime = connect(settings=Settings(namespace="raytasks-bench", data_dir=data_dir,
                                            workers_per_type=0, ray_dashboard=False))
    register_task_type("noop", noop, workers=workers, max_retries=0, runtime=runtime)
    tm = TaskManager(runtime)
    batch_rate(tm, min(tasks, 500))  # warm-up: executors started, code paths hot
    for _ in range(20):
        round_trip(tm)
    ray.get([_bare_noop.remote() for _ in range(200)])
    n = min(tasks, 2000)
    f: dict[str, Any] = {"tasks": tasks, "executors": workers}
    f["batch"], f["bare_batch"] = batch_rates(tm, tasks)
    f["sequential"] = sequential_rate(tm, tasks)
    f["concurrent"] = concurrent_rate(tm, n)
    f["bare_concurrent"] = bare_concurrent_rate(n)
    f["concurrent_n"] = n
    f["acks_per_s"], f["ack_p50_ms"] = ack_figures(tm, n)
    paths: dict[str, Callable[[], object]] = {
        "raytasks": lambda: round_trip(tm),
        "bare": lambda: ray.get(_bare_noop.remote())}
    reference = None
    if celery:
        from .celery_ref import CeleryReference

        reference = CeleryReference()
        paths["celery"] = reference.round_trip
    try:
        trips = interleaved_round_trips(paths, samples)
        for name, prefix in (("raytasks", ""), ("bare", "bare_")):
            times, cpu = trips[name]
            f[f"{prefix}round_trip_p50_ms"] = _pct(times, 0.5)
            f[f"{prefix}round_trip_p99_ms"] = _pct(times, 0.99)
            f[f"{prefix}round_trip_cpu_ms"] = cpu
        if reference is not None:
            times, _cpu = trips["celery"]
            f["celery"] = {"round_trip_p50_ms": _pct(times, 0.5),
                           "round_trip_p99_ms": _pct(times, 0.99),
                           "sequential": reference.sequential(tasks)}
    finally:
        if reference is not None:
            reference.close()
    ours, bare = idle_start_ms(tm, samples)
    f["idle_start_p50_ms"], f["bare_idle_start_p50_ms"] = _pct(ours, 0.5), _pct(bare, 0.5)
    f["high_overtake"] = overtake_share(tm, executors=workers)
    f["samples"] = samples
    if owned:
        runtime.shutdown()
    return f


def format_core(f: dict[str, Any]) -> str:
    c = f.get("celery") or {}

    def beside(key: str) -> str:
        return f"   Celery {c[key]:8.0f}" if key in c else ""

    lines = [
        f"raytasks core benchmark ({f['tasks']} no-op tasks, durable store, "
        f"{f['executors']} executors; references measured in this run)",
        f"  batch (submit_many + wait_all) : {f['batch']:8.0f} tasks/s   bare Ray "
        f"{f['bare_batch']:8.0f}   ratio {f['batch'] / f['bare_batch']:.2f} (target >= 1.5)",
        f"  one submit_sync per task       : {f['sequential']:8.0f} tasks/s"
        + beside("sequential"),
        f"  {f['concurrent_n']} concurrent submit+wait   : {f['concurrent']:8.0f} tasks/s   "
        f"bare Ray {f['bare_concurrent']:8.0f}   ratio "
        f"{f['concurrent'] / f['bare_concurrent']:.2f} (target >= 1.0)",
        f"  {f['concurrent_n']} sequential await submit  : {f['acks_per_s']:8.0f} acks/s    "
        f"ack p50 {f['ack_p50_ms']:.2f} ms (target >= 1,000 acks/s, p50 <= 1 ms)",
        f"  submit -> result, one at a time: p50 {f['round_trip_p50_ms']:.2f} ms, p99 "
        f"{f['round_trip_p99_ms']:.2f} ms   bare Ray p50 {f['bare_round_trip_p50_ms']:.2f}, "
        f"p99 {f['bare_round_trip_p99_ms']:.2f}"
        + (f"   Celery p50 {c['round_trip_p50_ms']:.2f}, p99 {c['round_trip_p99_ms']:.2f}"
           if c else "") + " (target p50 <= 2.0 ms)",
        *_cpu_line(f),
        f"  idle submit-to-start           : p50 {f['idle_start_p50_ms']:.2f} ms   "
        f"bare Ray p50 {f['bare_idle_start_p50_ms']:.2f} (target <= 2 ms)",
        f"  HIGH overtakes LOW (backlog)   : {100 * f['high_overtake']:.1f} % of pairs "
        "(target >= 95 %)",
    ]
    return "\n".join(lines)


def _cpu_line(f: dict[str, Any]) -> list[str]:
    """CPU per round trip, its three largest parts named, beside bare Ray's."""
    cpu, bare = f.get("round_trip_cpu_ms"), f.get("bare_round_trip_cpu_ms")
    if not cpu or not bare:
        return []
    top = sorted(cpu.items(), key=lambda kv: -kv[1])[:3]
    rest = sum(cpu.values()) - sum(v for _k, v in top)
    parts = ", ".join(f"{k} {v:.2f}" for k, v in top) + f", other {rest:.2f}"
    return [f"    CPU per round trip           : {sum(cpu.values()):.2f} ms ({parts})   "
            f"bare Ray {sum(bare.values()):.2f} ms"]
