"""Data tasks: ``sync`` (source → Parquet store, incremental and idempotent), ``clean``,
``features`` (Alpha158-style) and ``validate`` (a report of every violation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..context import TaskExecutionContext
from ..quant import adapters
from ..quant.barstore import BarStore
from ..quant.cleaning import clean, validation_report
from ..quant.data import load_bars
from ..quant.features import alpha158
from .params import DataParams


def data_task(params: DataParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    store = BarStore(params.store_path)
    if params.kind == "sync":
        return sync(params, store, ctx)
    bars = store.read(params.codes, params.start, params.end)
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
    path = Path(params.store_path).expanduser() / "features" / f"{ctx.task_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    feats.to_parquet(path)
    ctx.report_progress(1.0, "features written", stage="done")
    return {"kind": "features", "path": str(path), "rows": len(feats),
            "features": list(feats.columns), "codes": params.codes}


def sync(params: DataParams, store: BarStore, ctx: TaskExecutionContext) -> dict[str, Any]:
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
            bars = fetch(params, code, start.strftime("%Y-%m-%d"), params.end)
            bars = bars[bars["date"] >= start]
            store.write(bars)
            per_code[code] = len(bars)
        ctx.report_progress((i + 1) / len(params.codes), f"{code}: {per_code[code]} new bars",
                            stage="sync")
    return {"kind": "sync", "source": params.source, "rows_written": sum(per_code.values()),
            "per_code": per_code, "store": str(store.root)}


def fetch(params: DataParams, code: str, start: str, end: str) -> pd.DataFrame:
    if params.source in ("synthetic", "csv"):
        # the generator is deterministic over the whole range: slice it, never re-seed
        bars = load_bars([code], params.start, end, params.source, params.data_path,
                         params.seed)
        return bars[bars["date"] >= pd.Timestamp(start)]
    if params.source == "tushare":
        assert params.token is not None
        return adapters.fetch_tushare(code, start, end, params.token)
    if params.source == "akshare":
        return adapters.fetch_akshare(code, start, end)
    return adapters.fetch_baostock(code, start, end)
