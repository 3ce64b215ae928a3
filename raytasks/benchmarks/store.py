"""The store at scale: 1,000,000 finished and 100,000 pending tasks, on SQLite or PostgreSQL.

Measured on the manager's core directly (no Ray: these are the store's and the
manager's own costs): keyset pages of ``list_tasks`` with filters, ``stats`` from the
counters, the manager's memory per queued task, and a restart's reconcile time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import statistics
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from ..manager import TaskManagerCore
from ..models import TaskQuery, TaskStatus
from ..settings import Settings
from ..store import SqlTaskStore, WriteBatch

OWNERS = [f"quant{i:02d}" for i in range(20)]
TYPES = ["prediction", "backtest", "training", "data"]


def _rows(count: int, status: str, start: float, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        at = start + i * 0.01
        finished = status in ("COMPLETED", "FAILED", "CANCELLED")
        row = {
            "id": uuid.uuid4().hex, "name": f"job {i}", "task_type": rng.choice(TYPES),
            "status": status, "priority": rng.choice([1, 2, 3]), "queue": "default",
            "parameters": json.dumps({"stock_code": "000001.SZ", "days": 5}),
            "attempt": 0, "max_retries": 2, "timeout_s": 600.0, "depends_on": "[]",
            "idempotency_key": None, "tags": ["nightly"] if i % 7 == 0 else [],
            "owner": rng.choice(OWNERS), "notify": "[]", "cancel_requested": False,
            "queued": True, "lease_token": 1 if finished else 0, "created_at": at,
            "updated_at": at, "enqueued_at": None if finished else at,
            "result": '{"ok":true}' if status == "COMPLETED" else None,
            "started_at": at if finished else None, "finished_at": at + 1 if finished else None}
        out.append(row)
    return out


def fill(url: str, finished: int, pending: int, chunk: int = 20_000) -> float:
    """Write the tasks in chunks; returns the seconds it took."""
    store = SqlTaskStore(url)
    rng = random.Random(7)
    start = time.perf_counter()
    base = time.time() - 86400 * 30
    done = 0
    while done < finished:
        n = min(chunk, finished - done)
        status = rng.choices(["COMPLETED", "FAILED", "CANCELLED"], [80, 15, 5])[0]
        store.commit(WriteBatch(inserts=_rows(n, status, base + done * 0.01, rng)))
        done += n
    made = 0
    while made < pending:
        n = min(chunk, pending - made)
        store.commit(WriteBatch(inserts=_rows(n, "PENDING", time.time() - 3600 + made, rng)))
        made += n
    store.close()
    return time.perf_counter() - start


def _ms(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _measure(url: str, data_dir: Path, pending: int) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir, store_url=url, max_queue_size=10 * pending)
    t0 = time.perf_counter()
    core = TaskManagerCore(settings)
    core.reconcile()
    reconcile_s = time.perf_counter() - t0
    f: dict[str, Any] = {"reconcile_s": reconcile_s, "pending": len(core.active)}

    async def timed(coro_fn: Any, repeat: int = 20) -> list[float]:
        out = []
        for _ in range(repeat):
            t = time.perf_counter()
            await coro_fn()
            out.append((time.perf_counter() - t) * 1000)
        return out

    pages: list[Any] = []

    async def walk() -> None:
        """One owner's completed tasks, 20 keyset pages of 50 deep."""
        after = None
        for _ in range(20):
            page = await core.query(TaskQuery(owner="quant03", status=[TaskStatus.COMPLETED],
                                              limit=50, after=after))
            pages.append(page)
            after = page.next_after

    walk_ms = await timed(walk, 5)
    f["list_page_ms_p50"] = statistics.median(walk_ms) / 20
    f["list_first_page_ms_p50"] = statistics.median(await timed(lambda: core.query(TaskQuery(
        owner="quant07", status=[TaskStatus.FAILED], task_type=["backtest"], limit=50)), 20))
    f["stats_ms_p50"] = statistics.median(await timed(core.stats, 50))
    f["total_completed"] = pages[0].total
    core.close()
    # memory per queued task: what a second reconcile allocates, traced
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    again = TaskManagerCore(settings)
    again.reconcile()
    gc.collect()
    f["manager_bytes_per_queued_task"] = \
        (tracemalloc.get_traced_memory()[0] - before) / max(1, len(again.active))
    tracemalloc.stop()
    again.close()
    return f


def run_store(url: str | None = None, finished: int = 1_000_000,
              pending: int = 100_000) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="raytasks-bench-store-"))
    url = url or f"sqlite:///{data_dir / 'tasks.db'}"
    figures: dict[str, Any] = {"backend": url.split(":")[0], "finished": finished,
                               "pending_rows": pending}
    figures["fill_s"] = fill(url, finished, pending)
    figures.update(asyncio.run(_measure(url, data_dir, pending)))
    return figures


def format_store(f: dict[str, Any]) -> str:
    return "\n".join([
        f"raytasks store benchmark ({f['backend']}: {f['finished']:,} finished and "
        f"{f['pending_rows']:,} pending tasks, written in {f['fill_s']:.0f} s)",
        f"  list_tasks, keyset page of 50 (owner+status, 20 deep): p50 "
        f"{f['list_page_ms_p50']:.1f} ms (target <= 20 ms)",
        f"  list_tasks, first page (owner+status+type)          : p50 "
        f"{f['list_first_page_ms_p50']:.1f} ms (target <= 20 ms)",
        f"  stats (from counters)                               : p50 "
        f"{f['stats_ms_p50']:.2f} ms (target <= 50 ms)",
        f"  manager memory per queued task                      : "
        f"{f['manager_bytes_per_queued_task']:.0f} bytes (target <= 1,024)",
        f"  restart: reconcile {f['pending']:,} pending tasks          : "
        f"{f['reconcile_s']:.2f} s (target <= 5 s)",
    ])
