"""``raytasks bench units``: CPU seconds per work unit, for each kind of built-in task.

Each kind runs twice in this process (no Ray: fan-outs run here; the first run imports
and compiles what it needs, the second is timed), on synthetic bars, with
the parameters of a small real request; its CPU time (this process's, every thread)
divided by the work units its parameters declare is what one unit costs. The weights in
:mod:`raytasks.handlers.params` are set so that one unit costs about the same CPU for
every kind, and the owner's ``max_work_units`` ceiling means about the same CPU whatever
is asked for.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from ..context import TaskExecutionContext
from ..handlers import BUILTIN_TYPES
from ..settings import Settings

RANGE = {"start": "2021-01-04", "end": "2023-12-29"}
CODES = ["000001.SZ", "600000.SH", "300750.SZ"]

#: (task type, parameters) of each kind measured
KINDS: list[tuple[str, dict[str, Any]]] = [
    ("prediction", {"kind": "price", "stock_code": "000001.SZ", **RANGE}),
    ("prediction", {"kind": "trend", "stock_code": "000001.SZ", **RANGE}),
    ("prediction", {"kind": "volatility", "stock_code": "000001.SZ", **RANGE}),
    ("backtest", {"kind": "strategy", **RANGE}),
    ("backtest", {"kind": "optimize", "fast_values": [2, 4, 6, 8], "slow_values": [10, 20, 30],
                  **RANGE}),
    ("backtest", {"kind": "portfolio", "codes": CODES, **RANGE}),
    ("training", {"kind": "train", "model": "ridge", "codes": CODES, **RANGE}),
    ("training", {"kind": "train", "model": "gbrt", "codes": CODES, **RANGE}),
    ("training", {"kind": "train", "model": "random_forest", "codes": CODES, **RANGE}),
    ("training", {"kind": "tune", "trials": 4, "rounds": 2, "codes": CODES, **RANGE}),
    ("training", {"kind": "ensemble", "codes": CODES, **RANGE}),
    ("data", {"kind": "sync", "codes": CODES, **RANGE}),
    ("data", {"kind": "features", "codes": CODES, **RANGE}),
]


def run_units() -> list[dict[str, Any]]:
    """Per kind: its work units, the CPU seconds it took, and microseconds per unit."""
    specs = {spec.name: spec for spec in BUILTIN_TYPES}
    data_dir = Path(tempfile.mkdtemp(prefix="raytasks-units-"))
    settings = Settings(data_dir=data_dir, ray_dashboard=False)
    rows: list[dict[str, Any]] = []
    for task_type, raw in KINDS:
        spec = specs[task_type]
        params = spec.parse(raw)
        ctx = TaskExecutionContext(f"units-{len(rows)}", task_type, 0, raw,
                                   settings=settings, artifact_dir=data_dir / str(len(rows)))
        spec.handler(params, ctx)  # once to import and compile: the second run is timed
        started = time.process_time()
        spec.handler(params, ctx)
        cpu_s = time.process_time() - started
        units = spec.work_units(params)
        rows.append({"task_type": task_type, "kind": raw.get("kind"),
                     "model": raw.get("model"), "work_units": units, "cpu_s": cpu_s,
                     "us_per_unit": 1e6 * cpu_s / max(1, units)})
    return rows


def format_units(rows: list[dict[str, Any]]) -> str:
    lines = ["CPU per work unit, each kind run here on synthetic bars "
             "(the weights in raytasks/handlers/params.py aim at the same for every kind)"]
    for row in rows:
        what = f"{row['task_type']} {row['kind']}" + (f" {row['model']}" if row["model"]
                                                       else "")
        lines.append(f"  {what:32s} {row['work_units']:>10,} units  {row['cpu_s']:7.2f} CPU s"
                     f"  {row['us_per_unit']:8.1f} us/unit")
    return "\n".join(lines)
