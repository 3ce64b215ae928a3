"""Celery + Redis measured as the core benchmark measures raytasks (a reference, same run).

Starts its own ``redis-server`` and a Celery worker (2 processes) on free ports in a
temporary directory, and stops them by pid. Needs ``pip install celery redis`` and the
``redis-server`` binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


class CeleryReference:
    """A running Celery + Redis reference: ``round_trip`` and ``sequential`` are measured
    the way the core benchmark measures raytasks; ``close`` stops both by pid."""

    def __init__(self) -> None:
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            raise RuntimeError("redis-server is not installed: the Celery reference needs it")
        self._folder = Path(tempfile.mkdtemp(prefix="raytasks-celery-"))
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        (self._folder / "bench_celery.py").write_text(APP)
        env = {**os.environ, "BENCH_REDIS": url, "PYTHONPATH": str(self._folder)}
        self._procs = [subprocess.Popen(
            [redis_bin, "--port", str(port), "--save", "", "--appendonly", "no", "--dir",
             str(self._folder)], stdout=subprocess.DEVNULL)]
        self._procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench_celery", "worker", "-c", "2",
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat"], cwd=self._folder, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        try:
            sys.path.insert(0, str(self._folder))
            os.environ["BENCH_REDIS"] = url
            import bench_celery

            self._noop = bench_celery.noop
            self._noop.delay().get(timeout=60)  # the worker is up
            for _ in range(50):
                self.round_trip()
        except BaseException:
            self.close()
            raise

    def round_trip(self) -> None:
        self._noop.delay().get(timeout=30)

    def sequential(self, tasks: int) -> float:
        """Tasks/s of ``tasks`` single ``delay()`` calls, then a get of each."""
        start = time.perf_counter()
        results = [self._noop.delay() for _ in range(tasks)]
        for r in results:
            r.get(timeout=600)
        return tasks / (time.perf_counter() - start)

    def close(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self._folder, ignore_errors=True)
