"""``raytasks bench lineage``: what recording lineage costs a no-op task, beside what the
whole task costs, in the same run.

A no-op is where lineage weighs most: nothing else happens. Its cost per task has three
parts, each timed here in this process's CPU (steady on a shared machine, where wall-clock
throughput of two whole runs differs by more than the cost itself), interleaved:

- the executor's: starting the lineage, its row's text and its environment;
- the report's transport: a Report pickled and unpickled with and without them;
- the store's: completions committed (a fenced update each, 100 per batch, as the manager
  commits them) to a SQLite store with the lineage's row text, without it, and with the
  lineage whole (as rows kept it before environments were stored apart); and the finished
  tasks read back 100 at a time (as waits read them), the lineage decoded and made whole.

The reference is the CPU one no-op task costs on the batch path (``submit_many`` then
``wait_all``; every process raytasks started, summed), measured in the same run.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ..api import TaskManager, register_task_type
from ..lineage import Lineage
from ..messages import Report
from ..registry import TaskTypeSpec
from ..runtime import connect
from ..settings import Settings
from ..store import WriteBatch, open_store
from ..store.base import RowUpdate
from .core import batch_rate, noop
from .processes import cpu_ms_per_task, cpu_s_by_process, descendants

#: The store's variants: what a completion writes in the lineage column.
STORED = ("none", "row", "whole")


def _cpu_us(call: Callable[[], object], n: int) -> float:
    """CPU microseconds per call of ``call`` (this process), over ``n`` calls."""
    start = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - start) * 1e6 / n


def executor_us(n: int = 20_000) -> float:
    spec = TaskTypeSpec("noop", noop)

    def record() -> None:
        lineage = Lineage.start(spec, spec.parse({}))
        lineage.text()
        lineage.environment()
    record()
    return _cpu_us(record, n)


def transport_us(n: int = 20_000) -> float:
    """A report's pickling and unpickling with the lineage's fields, less without."""
    lineage = Lineage.start(TaskTypeSpec("noop", noop), {})
    with_it = Report("f" * 32, 1, "completed", result="1.0", lineage=lineage.text(),
                     environment=lineage.environment())
    without = Report("f" * 32, 1, "completed", result="1.0")
    return (_cpu_us(lambda: pickle.loads(pickle.dumps(with_it)), n)
            - _cpu_us(lambda: pickle.loads(pickle.dumps(without)), n))


def store_us(rounds: int = 5, batches: int = 10, size: int = 100
             ) -> dict[str, dict[str, float]]:
    """CPU microseconds per completion committed (``commit``) and per finished task read
    (``read``), per :data:`STORED` variant."""
    lineage = Lineage.start(TaskTypeSpec("noop", noop), {})
    texts = {"none": None, "row": lineage.text(),
             "whole": json.dumps(lineage, sort_keys=True, separators=(",", ":"))}
    store = open_store(f"sqlite:///{tempfile.mkdtemp(prefix='raytasks-bench-')}/store.db")
    now = time.time()
    rows = {v: [f"{v}-{i}" for i in range(rounds * batches * size)] for v in STORED}
    for ids in rows.values():
        for at in range(0, len(ids), 1000):
            store.commit(WriteBatch(inserts=[_running(i, now) for i in ids[at:at + 1000]]))
    spent = {v: {"commit": 0.0, "read": 0.0} for v in STORED}
    env = dict([lineage.environment()])
    for r in range(rounds):
        for variant in STORED[r % 3:] + STORED[:r % 3]:  # in a rotating order
            for b in range(batches):
                ids = rows[variant][(r * batches + b) * size:(r * batches + b + 1) * size]
                batch = WriteBatch(updates=[RowUpdate(i, {
                    "status": "COMPLETED", "result": "1.0", "result_uri": None, "error": None,
                    "finished_at": now, "updated_at": now, "lineage": texts[variant]},
                    token=1, status="RUNNING") for i in ids],
                    environments=env if variant == "row" else {})
                start = time.process_time()
                store.commit(batch)
                committed = time.process_time()
                store.get_many(ids)
                spent[variant]["commit"] += committed - start
                spent[variant]["read"] += time.process_time() - committed
    store.close()
    n = rounds * batches * size
    return {v: {k: s * 1e6 / n for k, s in spent[v].items()} for v in STORED}


def _running(task_id: str, now: float) -> dict[str, Any]:
    return {"id": task_id, "name": "noop", "task_type": "noop", "status": "RUNNING",
            "priority": 2, "queue": "default", "parameters": "{}", "attempt": 0,
            "max_retries": 0, "timeout_s": None, "depends_on": "[]", "tags": [],
            "notify": "[]", "lease_token": 1, "created_at": now, "updated_at": now}


def task_us(tasks: int, workers: int) -> tuple[float, dict[str, float]]:
    """CPU microseconds one no-op task costs on the batch path, all processes summed (and
    by process kind)."""
    settings = Settings(namespace="raytasks-bench-lineage",
                        data_dir=tempfile.mkdtemp(prefix="raytasks-bench-"),
                        workers_per_type=0, ray_dashboard=False)
    runtime = connect(settings=settings)
    try:
        register_task_type("noop", noop, workers=workers, max_retries=0, runtime=runtime)
        tm = TaskManager(runtime)
        batch_rate(tm, min(tasks, 500))  # warm-up
        others = descendants(os.getpid())
        before = cpu_s_by_process(others, own_last=True)
        batch_rate(tm, tasks)
        by = cpu_ms_per_task(before, cpu_s_by_process(others), tasks)
    finally:
        runtime.shutdown()
    return sum(by.values()) * 1000, {k: v * 1000 for k, v in by.items()}


def run_lineage(tasks: int = 5000, workers: int = 2) -> dict[str, Any]:
    f: dict[str, Any] = {"tasks": tasks}
    f["task_us"], f["task_us_by_process"] = task_us(tasks, workers)
    f["executor_us"] = executor_us()
    f["transport_us"] = transport_us()
    stored = store_us()
    f["store_us"] = stored
    f["store_added_us"] = {v: sum(stored[v].values()) - sum(stored["none"].values())
                           for v in ("row", "whole")}
    f["lineage_us"] = f["executor_us"] + f["transport_us"] + f["store_added_us"]["row"]
    f["lineage_whole_us"] = f["executor_us"] + f["transport_us"] + f["store_added_us"]["whole"]
    f["share"] = f["lineage_us"] / f["task_us"]
    f["share_whole"] = f["lineage_whole_us"] / f["task_us"]
    lineage = Lineage.start(TaskTypeSpec("noop", noop), {})
    f["row_bytes"] = len(lineage.text())
    f["whole_bytes"] = len(json.dumps(lineage, sort_keys=True, separators=(",", ":")))
    return f


def format_lineage(f: dict[str, Any]) -> str:
    s, added = f["store_us"], f["store_added_us"]

    def io(variant: str) -> str:
        return f"commit {s[variant]['commit']:.1f} + read {s[variant]['read']:.1f} us"
    return "\n".join([
        f"a no-op task on the batch path: {f['task_us']:.0f} us of CPU, all processes "
        f"({f['tasks']} tasks)",
        f"lineage per task: executor {f['executor_us']:.1f} us, report transport "
        f"{f['transport_us']:.1f} us, store {added['row']:.1f} us ({io('none')} without, "
        f"{io('row')} with its {f['row_bytes']} bytes)",
        f"  = {f['lineage_us']:.1f} us, {100 * f['share']:.1f} % of the task "
        f"(target <= 5 %)",
        f"stored whole ({f['whole_bytes']} bytes, before environments were kept apart): "
        f"store {added['whole']:.1f} us ({io('whole')}), {f['lineage_whole_us']:.1f} us in "
        f"all, {100 * f['share_whole']:.1f} %",
    ])
