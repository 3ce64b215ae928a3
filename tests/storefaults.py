"""Store faults under a running workload: the store stopped, cut off, locked or full, then
back; what clients saw while it was away and how long recovery took.

Used by ``tests/ray/test_store_faults.py`` (short) and ``tests/chaos.py --store-outages``
(the soak).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from raytasks import TaskCreateRequest, TaskManager, TaskNotificationService, TaskStatus
from raytasks.errors import RaytasksError

#: What a create during a fault may be refused with (Python client, HTTP API).
STORE_FAULT_ERRORS = {"StoreUnavailableError", "StoreFullError"}
STORE_FAULT_HTTP = {(503, "StoreUnavailable"), (507, "StoreFull")}


def work_request(seconds: float = 0.5, blob: int = 0) -> TaskCreateRequest:
    return TaskCreateRequest(name="store-fault", task_type="chaos",
                             parameters={"seconds": seconds, "blob": blob})


class Clients:
    """A Python client and (optionally) an HTTP client creating tasks in a loop, in a thread
    each: what was acknowledged, and every refusal by kind, with the longest refusal."""

    def __init__(self, runtime: Any, http_url: str | None = None,
                 http_headers: dict[str, str] | None = None, every_s: float = 0.2) -> None:
        self.tm = TaskManager(runtime)
        self.http_url, self.http_headers = http_url, http_headers or {}
        self.every_s = every_s
        self.acked: list[str] = []
        self.errors: Counter[str] = Counter()
        self.slowest_refusal_s = 0.0
        self.messages: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._python, daemon=True)]
        if http_url:
            self._threads.append(threading.Thread(target=self._http, daemon=True))

    def start(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _refused(self, kind: str, message: str, took_s: float) -> None:
        with self._lock:
            self.errors[kind] += 1
            self.messages.setdefault(kind, message)
            self.slowest_refusal_s = max(self.slowest_refusal_s, took_s)

    def _python(self) -> None:
        while not self._stop.wait(self.every_s):
            started = time.monotonic()
            try:
                task = self.tm.submit_sync(work_request(0.2))
            except RaytasksError as exc:
                self._refused(type(exc).__name__, str(exc), time.monotonic() - started)
                continue
            except Exception as exc:  # a hang cut short by Ray, a crash: counted apart
                self._refused(f"other:{type(exc).__name__}", str(exc)[:300],
                              time.monotonic() - started)
                continue
            with self._lock:
                self.acked.append(task.id)

    def _http(self) -> None:
        assert self.http_url is not None
        body = {"name": "store-fault-http", "task_type": "chaos",
                "parameters": {"seconds": 0.2}}
        with httpx.Client(base_url=self.http_url, timeout=60) as c:
            while not self._stop.wait(self.every_s * 2):
                started = time.monotonic()
                try:
                    r = c.post("/tasks", json=body, headers=self.http_headers)
                except httpx.HTTPError as exc:
                    self._refused(f"http:{type(exc).__name__}", str(exc),
                                  time.monotonic() - started)
                    continue
                if r.status_code == 201:
                    with self._lock:
                        self.acked.append(r.json()["id"])
                else:
                    self._refused(f"http {r.status_code} {r.json().get('error')}",
                                  r.text[:400], time.monotonic() - started)


class Stream:
    """Every event the notifier streams, from the first."""

    def __init__(self, runtime: Any) -> None:
        self.seen: list[Any] = []
        self._sub = TaskNotificationService(runtime).subscribe(self.seen.append, after_id=0)

    def ids(self, store: Any, timeout_s: float = 60.0) -> list[int]:
        """The streamed event ids, once the stream caught up with the store's last."""
        last = store.max_event_id()
        deadline = time.monotonic() + timeout_s
        while (not self.seen or self.seen[-1].event_id < last) and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        self._sub.close()
        return [e.event_id for e in self.seen]


def recovery(tasks: list[Any], back_at: float) -> dict[str, float | None]:
    """Seconds from the store's return to the first task finished after it, and to the
    last task finished."""
    ends = sorted(t.finished_at.timestamp() for t in tasks if t.finished_at is not None
                  and t.finished_at.timestamp() >= back_at)
    return {"to_first_completion_s": round(ends[0] - back_at, 2) if ends else None,
            "to_all_done_s": round(ends[-1] - back_at, 2) if ends else None}


def completed_on_first_attempt(tasks: list[Any]) -> list[str]:
    """Problems: tasks that ran again (a lease expired, an attempt failed) though no
    attempt of theirs was planned to fail."""
    return [f"{t.id} ended {t.status.value} on attempt {t.attempt}"
            + (f" ({t.error.reason}: {t.error.message})" if t.error else "")
            for t in tasks if t.status is not TaskStatus.COMPLETED or t.attempt != 0]


class SqliteLock:
    """Another process holding ``BEGIN EXCLUSIVE`` on a SQLite file (ended by its pid)."""

    def __init__(self, path: Path, hold_s: float) -> None:
        code = ("import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)\n"
                "c.execute('BEGIN EXCLUSIVE')\n"
                "print('locked', flush=True)\n"
                "time.sleep(float(sys.argv[2]))\n"
                "c.execute('ROLLBACK')\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(hold_s)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "locked":
            self.proc.kill()
            raise RuntimeError(f"the locking process did not lock {path}: {line!r}")

    def wait(self, timeout_s: float = 60.0) -> None:
        self.proc.wait(timeout_s)


def during(seconds: float, fault: Callable[[], None], back: Callable[[], None]) -> float:
    """Inject ``fault``, hold it ``seconds``, call ``back``; returns when (epoch) it was
    back."""
    fault()
    time.sleep(seconds)  # the outage itself: its length is the test's input
    back()
    return time.time()


class Outages:
    """Faults of the store during a soak: ``count`` of them, ``hold_s`` each, spread over
    ``duration_s``; when each ended (epoch), for :func:`recovery`."""

    def __init__(self, count: int, duration_s: float, fault: Callable[[], None],
                 back: Callable[[], None], hold_s: float = 15.0) -> None:
        self.count, self.duration_s, self.hold_s = count, duration_s, hold_s
        self.fault, self.back = fault, back
        self.back_at: list[float] = []

    def loop(self) -> None:
        gap = max(1.0, (self.duration_s - self.count * self.hold_s) / (self.count + 1))
        for _ in range(self.count):
            time.sleep(gap)  # spacing the faults over the soak
            self.back_at.append(during(self.hold_s, self.fault, self.back))

    def figures(self, tasks: list[Any]) -> list[dict[str, float | None]]:
        """Per outage: seconds from its end to the first task finished after it."""
        return [{"held_s": self.hold_s,
                 "to_first_completion_s": recovery(tasks, at)["to_first_completion_s"]}
                for at in self.back_at]


def outages_of(store_url: str, postgres: Any, count: int, duration_s: float,
               hold_s: float = 15.0) -> Outages:
    """Outages of the soak's store: its throwaway PostgreSQL stopped (``-m immediate``) and
    started, or its SQLite file locked by another process.

    Raises:
        ValueError: a PostgreSQL store this run did not start (it cannot be stopped here).
    """
    if store_url.startswith("sqlite"):
        path = Path(store_url.split("///", 1)[-1])
        locks: list[SqliteLock] = []
        return Outages(count, duration_s, lambda: locks.append(SqliteLock(path, hold_s)),
                       lambda: locks[-1].wait(), hold_s)
    if postgres is None:
        raise ValueError("--store-outages on PostgreSQL needs --postgres (a server this run "
                         "starts and may stop)")
    return Outages(count, duration_s, postgres.halt, postgres.resume, hold_s)
