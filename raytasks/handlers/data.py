"""Data tasks: ``sync`` (source → Parquet store, incremental and idempotent), ``clean``,
``features`` (Alpha158-style) and ``validate`` (a report of every violation).

The bar store is the owner's own part of a named store (:mod:`raytasks.resources`):
one owner's sync, clean or read never touches another's bars. Features go to the
attempt's own artifact directory, so a superseded attempt cannot overwrite them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..context import TaskExecutionContext
from ..quant.barstore import BarStore
from ..quant.cleaning import clean, validation_report
from ..quant.features import alpha158
from ..resources import Resources
from .params import DataParams


def data_task(params: DataParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    resources = Resources.of(ctx)
    store = resources.bar_store(params.store)
    if params.kind == "sync":
        return sync(params, resources, store, ctx)
    bars = store.read(params.codes, params.start, params.end)
    if resources.lineage is not None:  # what it computes from: the store's bars
        resources.lineage.bars(f"store:{params.store}", bars, params.start, params.end)
    if bars.empty:
        raise ValueError(f"no stored bars for {params.codes}: run a data sync first")
    ctx.report_progress(0.3, f"{len(bars)} bars loaded", stage="load")
    if params.kind == "validate":
        report = validation_report(bars)
        ctx.report_progress(1.0, "validated", stage="done")
        return {"kind": "validate", **report}
    if params.kind == "clean":
        cleaned, report = clean(bars)
        store.write(cleaned, replace=True)
        ctx.report_progress(1.0, "cleaned", stage="done")
        return {"kind": "clean", **report}
    feats = alpha158(bars, tuple(params.windows))
    ctx.check_cancelled()
    path = ctx.artifact_dir / "features.parquet"
    feats.to_parquet(path)
    ctx.report_progress(1.0, "features written", stage="done")
    # the file's name in the attempt's artifacts, not its server path
    return {"kind": "features", "artifact": path.name, "rows": len(feats),
            "features": list(feats.columns), "codes": params.codes}


def sync(params: DataParams, resources: Resources, store: BarStore,
         ctx: TaskExecutionContext) -> dict[str, Any]:
    per_code: dict[str, int] = {}
    for i, code in enumerate(params.codes):
        ctx.check_cancelled()
        last = store.last_date(code)
        start = pd.Timestamp(params.start)
        if last is not None:
            start = max(start, last + pd.Timedelta(days=1))
        if start > pd.Timestamp(params.end):
            per_code[code] = 0  # already up to date: a repeated sync writes nothing
        else:
            bars = fetch(params, resources, code, start.strftime("%Y-%m-%d"))
            bars = bars[bars["date"] >= start]
            store.write(bars)
            per_code[code] = len(bars)
        ctx.report_progress((i + 1) / len(params.codes), f"{code}: {per_code[code]} new bars",
                            stage="sync")
    return {"kind": "sync", "source": params.source, "rows_written": sum(per_code.values()),
            "per_code": per_code, "store": params.store}


def fetch(params: DataParams, resources: Resources, code: str, start: str) -> pd.DataFrame:
    """One code's bars from ``start`` to ``params.end``."""
    if resources.data_source(params.source).kind in ("synthetic", "csv", "qlib"):
        # the generator is deterministic over the whole range: slice it, never re-seed (and a
        # local directory may hold nothing new, which a read of the new days alone refuses)
        bars = resources.load_bars(params.source, [code], params.start, params.end,
                                   params.seed)
        return bars[bars["date"] >= pd.Timestamp(start)]
    return resources.load_bars(params.source, [code], start, params.end, params.seed)
