"""Floods: a client loop submitting far past ``max_queue_size``, and an HTTP client at
full speed on ``POST /tasks`` and ``GET /tasks``.

- **HTTP** (first, on the fresh service): alice's p50/p99 on the task routes quiet, then
  while bob hammers ``POST /tasks`` and ``GET /tasks`` from other processes at full speed
  (paced per owner: 429 ``TooManyRequests`` with ``Retry-After``); the ratio (target:
  within 2x), and what bob got.
- **Client loop**: nothing drains the queue (no executor), so every accepted task stays.
  An owner's loop submits ``tasks`` tasks in chunks: it is held at its share of the queue
  (``QuotaExceededError``, ``max_queue_share``), and another owner still submits. Then a
  trusted (ownerless) loop fills the rest: ``QueueFullError`` from exactly
  ``max_queue_size``. Every refusal is an answer (the slowest call is printed), and the
  RSS of every system actor and of the client is read as the queue fills and after the
  refusals: refused calls cost no memory; the bound is what the full queue holds.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import socket
import tempfile
import threading
import time
from collections import Counter
from typing import Any

import ray

from ..api import TaskManager, register_task_type
from ..errors import QueueFullError, QuotaExceededError
from ..models import TaskCreateRequest, TaskQuery
from ..runtime import Runtime, connect
from ..settings import ApiSettings, ApiToken, Settings, TaskTypeSettings
from .core import _pct, noop
from .endurance import system_pids, system_rss_mb
from .processes import rss_mb


def _request(owner: str | None) -> TaskCreateRequest:
    return TaskCreateRequest(name="flood", task_type="noop", max_retries=0, parameters={},
                             owner=owner)


def client_flood(runtime: Runtime, submits: int, owner: str | None, chunk: int = 1,
                 points: int = 10) -> dict[str, Any]:
    """One client loop: ``submits`` tasks of ``owner`` in calls of ``chunk``, whatever is
    refused. Returns the accepted and refused counts (by error and limit), the slowest
    call and the p99 (ms), the RSS (MB) by process at ``points`` along the way (the
    client as ``client``), and the first refusal's message."""
    tm = TaskManager(runtime)
    pids = system_pids(runtime)
    accepted, refused = 0, Counter[str]()
    first_refusal, calls_ms, curve = "", [], []
    every = max(1, submits // points)
    for start in range(0, submits, chunk):
        n = min(chunk, submits - start)
        t0 = time.perf_counter()
        try:
            if n == 1:
                tm.submit_sync(_request(owner))
            else:
                tm.submit_many_sync([_request(owner) for _ in range(n)])
            accepted += n
        except (QueueFullError, QuotaExceededError) as exc:
            limit = exc.data.get("limit") if isinstance(exc, QuotaExceededError) else None
            refused[f"{type(exc).__name__}({limit})" if limit else type(exc).__name__] += n
            first_refusal = first_refusal or str(exc)
        calls_ms.append((time.perf_counter() - t0) * 1000)
        if (start + n) // every != start // every or start + n == submits:
            curve.append({"submits": start + n, "accepted": accepted,
                          "rss_mb": {**system_rss_mb(pids), "client": rss_mb(os.getpid())}})
    return {"submits": submits, "chunk": chunk, "owner": owner, "accepted": accepted,
            "refused": dict(refused), "first_refusal": first_refusal,
            "call_p99_ms": _pct(calls_ms, 0.99), "call_max_ms": max(calls_ms),
            "curve": curve}


def _serve(runtime: Runtime) -> tuple[Any, threading.Thread, str]:
    import uvicorn

    from ..server.app import create_app
    from ..server.peers import uvicorn_options

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port,
                                           log_level="warning",
                                           **uvicorn_options(runtime.settings.api)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _hammer(url: str, token: str, seconds: float, threads: int, out: Any) -> None:
    """A flooding process: ``threads`` connections alternating ``POST /tasks`` and
    ``GET /tasks`` as fast as answers come, for ``seconds``; puts its status counts.

    It runs at nice 10: a flooding client's own CPU is its machine's, not the server's
    (on one machine it would otherwise take the server's cores, which no server setting
    can prevent); every call it makes still costs the server what it costs."""
    import httpx

    os.nice(10)

    counts: Counter[int] = Counter()
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            i = 0
            while time.monotonic() < until:
                r = (http.post("/tasks", json={"name": "f", "task_type": "noop",
                                               "parameters": {}}) if i % 2 == 0
                     else http.get("/tasks", params={"limit": 20}))
                i += 1
                with lock:
                    counts[r.status_code] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(dict(counts))


def _latencies(url: str, token: str, samples: int, interval_s: float) -> list[float]:
    """A well-behaved owner: alternating ``GET /tasks`` and ``POST /tasks``, one every
    ``interval_s`` (within its rate); each answer's time (ms). Anything but 2xx raises."""
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(samples):
            t0 = time.perf_counter()
            r = (http.get("/tasks", params={"limit": 20}) if i % 2 == 0
                 else http.post("/tasks", json={"name": "q", "task_type": "noop",
                                                "parameters": {}}))
            out.append((time.perf_counter() - t0) * 1000)
            if r.status_code >= 300:
                raise RuntimeError(f"the quiet owner was refused: {r.status_code} {r.text}")
            time.sleep(max(0.0, interval_s - out[-1] / 1000))
    return out


def _sample(url: str, token: str, samples: int, interval_s: float, out: Any) -> None:
    out.put(_latencies(url, token, samples, interval_s))


def _latencies_apart(url: str, token: str, samples: int, interval_s: float) -> list[float]:
    """:func:`_latencies` from a process of its own, as a client on another machine: in
    this one, its requests would share the server's interpreter (and its lock)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_sample, args=(url, token, samples, interval_s, queue))
    proc.start()
    try:
        got: list[float] = queue.get(timeout=samples * interval_s + 300)
        return got
    finally:
        proc.join(timeout=30)


def http_flood(runtime: Runtime, tokens: dict[str, str], seconds: float = 20.0,
               processes: int = 2, threads: int = 4, samples: int = 200) -> dict[str, Any]:
    """Alice's latency quiet and while bob floods; bob's answers by status."""
    server, thread, url = _serve(runtime)
    try:
        interval_s = seconds / samples
        quiet = _latencies_apart(url, tokens["alice"], samples, interval_s)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        floods = [ctx.Process(target=_hammer, args=(url, tokens["bob"], seconds + 10,
                                                     threads, queue))
                  for _ in range(processes)]
        for p in floods:
            p.start()
        time.sleep(5)  # the flooders' interpreters start and reach full speed
        loud = _latencies_apart(url, tokens["alice"], samples, interval_s)
        bob: Counter[int] = Counter()
        for _ in floods:
            bob.update(queue.get(timeout=seconds + 120))
        for p in floods:
            p.join(timeout=30)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    p99_quiet, p99_loud = _pct(quiet, 0.99), _pct(loud, 0.99)
    return {"quiet_p50_ms": _pct(quiet, 0.5), "quiet_p99_ms": p99_quiet,
            "flood_p50_ms": _pct(loud, 0.5), "flood_p99_ms": p99_loud,
            "p99_ratio": p99_loud / p99_quiet, "bob": {str(k): v for k, v in bob.items()},
            "bob_calls_per_s": sum(bob.values()) / (seconds + 10),
            "processes": processes, "threads": threads,
            "creates_per_s": runtime.settings.api.max_creates_per_s,
            "reads_per_s": runtime.settings.api.max_reads_per_s,
            "burst_s": runtime.settings.api.rate_burst_s}


def run_flood(tasks: int = 1_000_000, max_queue_size: int = 100_000, chunk: int = 100,
              http_seconds: float = 20.0, http: bool = True, loops: bool = True,
              creates_per_s: float | None = None,
              reads_per_s: float | None = None) -> dict[str, Any]:
    """The HTTP flood, then the client loops, on one fresh service. ``creates_per_s`` and
    ``reads_per_s``: the API's per-owner rates (default: the settings' defaults)."""
    tokens = {who: secrets.token_urlsafe(32) for who in ("alice", "bob")}
    from ..server.auth import hash_token

    settings = Settings(
        namespace="raytasks-flood", data_dir=tempfile.mkdtemp(prefix="raytasks-flood-"),
        ray_dashboard=False, max_queue_size=max_queue_size, warm_workers_per_type=0,
        task_types={"noop": TaskTypeSettings(workers=0)},
        api=ApiSettings(tokens=[ApiToken(sha256=hash_token(t), owner=who)
                                for who, t in tokens.items()],
                        **{k: v for k, v in (("max_creates_per_s", creates_per_s),
                                             ("max_reads_per_s", reads_per_s))
                           if v is not None}))
    runtime = connect(settings=settings)
    try:
        register_task_type("noop", noop, runtime=runtime)
        out: dict[str, Any] = {"max_queue_size": max_queue_size}
        if http:
            out["http"] = http_flood(runtime, tokens, http_seconds)
        if not loops:
            return out
        tm = TaskManager(runtime)
        out["owner_loop"] = client_flood(runtime, tasks, "notebook", chunk)
        t0 = time.perf_counter()
        tm.submit_sync(_request("colleague"))
        out["colleague_submit_ms"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        tm.list_tasks_sync(TaskQuery(owner="colleague"))
        out["colleague_list_ms"] = (time.perf_counter() - t0) * 1000
        out["trusted_loop"] = client_flood(runtime, max(chunk, tasks // 10), None, chunk)
        out["waiting"] = sum(sum(q["waiting"].values()) for q in tm.stats_sync()["queues"])
        return out
    finally:
        runtime.shutdown()
        ray.shutdown()


def format_loop(name: str, f: dict[str, Any]) -> list[str]:
    first, last = f["curve"][0], f["curve"][-1]
    full = next((p for p in f["curve"] if p["accepted"] == f["accepted"]), last)
    rss = ", ".join(f"{k} {full['rss_mb'][k]:.0f} -> {last['rss_mb'][k]:.0f}"
                    for k in last["rss_mb"])
    return [
        f"  {name}: {f['submits']:,} submits in calls of {f['chunk']}: {f['accepted']:,} "
        f"accepted, refused {f['refused']}; call p99 {f['call_p99_ms']:.1f} ms, slowest "
        f"{f['call_max_ms']:.0f} ms",
        f"    first refusal: {f['first_refusal']}",
        f"    RSS MB at the first point ({first['submits']:,} submits): " + ", ".join(
            f"{k} {v:.0f}" for k, v in first["rss_mb"].items()),
        f"    RSS MB once full -> after every refusal: {rss}",
    ]


def format_flood(f: dict[str, Any]) -> str:
    lines = [f"raytasks flood (max_queue_size={f['max_queue_size']:,}; nothing drains)"]
    if "http" in f:
        h = f["http"]
        lines += [
            f"  HTTP paced per owner at {h['creates_per_s']} creates/s and "
            f"{h['reads_per_s']} reads/s (burst {h['burst_s']:g} s)",
            f"  HTTP: bob at full speed ({h['processes']} processes x {h['threads']} "
            f"connections, {h['bob_calls_per_s']:.0f} calls/s) got {h['bob']}",
            f"    alice quiet  p50 {h['quiet_p50_ms']:6.1f} ms  p99 {h['quiet_p99_ms']:6.1f} ms",
            f"    alice flood  p50 {h['flood_p50_ms']:6.1f} ms  p99 {h['flood_p99_ms']:6.1f} ms",
            f"    p99 ratio {h['p99_ratio']:.2f} (target <= 2)",
        ]
    if "owner_loop" not in f:
        return "\n".join(lines)
    lines += format_loop("an owner's loop", f["owner_loop"])
    lines += [f"  another owner meanwhile: submit {f['colleague_submit_ms']:.1f} ms, list "
              f"{f['colleague_list_ms']:.1f} ms"]
    lines += format_loop("a trusted (ownerless) loop", f["trusted_loop"])
    lines += [f"  queued at the end: {f['waiting']:,} of {f['max_queue_size']:,}"]
    return "\n".join(lines)
