"""Celery + Redis measured as the core benchmark measures raytasks (a reference, same run).

Starts its own ``redis-server`` and a Celery worker (2 processes) on free ports in a
temporary directory, and stops them by pid. Needs ``pip install celery redis`` and the
``redis-server`` binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

APP = '''
import os, time
from celery import Celery
app = Celery("bench", broker=os.environ["BENCH_REDIS"], backend=os.environ["BENCH_REDIS"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=4, result_expires=600)

@app.task
def noop():
    return time.time()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_celery(tasks: int, samples: int) -> dict[str, Any]:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise RuntimeError("redis-server is not installed: the Celery reference needs it")
    folder = Path(tempfile.mkdtemp(prefix="raytasks-celery-"))
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    (folder / "bench_celery.py").write_text(APP)
    env = {**os.environ, "BENCH_REDIS": url, "PYTHONPATH": str(folder)}
    redis = subprocess.Popen([redis_bin, "--port", str(port), "--save", "", "--appendonly",
                              "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench_celery", "worker",
                               "-c", "2", "--loglevel", "WARNING", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sys.path.insert(0, str(folder))
        os.environ["BENCH_REDIS"] = url
        import bench_celery

        noop = bench_celery.noop
        noop.delay().get(timeout=60)  # the worker is up
        for _ in range(50):
            noop.delay().get(timeout=30)
        start = time.perf_counter()
        results = [noop.delay() for _ in range(tasks)]
        for r in results:
            r.get(timeout=600)
        sequential = tasks / (time.perf_counter() - start)
        trips = []
        for _ in range(samples):
            t0 = time.perf_counter()
            noop.delay().get(timeout=30)
            trips.append((time.perf_counter() - t0) * 1000)
        trips.sort()
        return {"sequential": sequential, "round_trip_p50_ms": statistics.median(trips),
                "round_trip_p99_ms": trips[min(len(trips) - 1, round(0.99 * (len(trips) - 1)))]}
    finally:
        for proc in (worker, redis):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
