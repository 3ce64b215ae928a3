"""Cleaning and validation of stored bars against the schema, OHLC sanity and the calendar."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .calendar import trading_days
from .corporate import event_arrays, factor_mismatches, reference_prices
from .market import EVENT_COLUMNS, limit_pct_series, validate_bars


def calendar_gaps(bars: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
    """(code, date) of every trading session inside a code's range that has no bar."""
    gaps = []
    for code, frame in bars.groupby("code"):
        sessions = trading_days(frame["date"].min(), frame["date"].max())
        for day in sessions.difference(pd.DatetimeIndex(frame["date"])):
            gaps.append((str(code), day))
    return gaps


def limit_breaches(bars: pd.DataFrame) -> list[dict[str, Any]]:
    """Closes further from the previous close (the ex-rights reference price on an ex-date)
    than the board's limit allows."""
    out = []
    for code, frame in bars.groupby("code"):
        frame = frame.sort_values("date")
        ref = reference_prices(frame["close"].to_numpy(float), *event_arrays(frame))
        ref[0] = np.nan
        pct = limit_pct_series(str(code), pd.DatetimeIndex(frame["date"]),
                               frame["is_st"].to_numpy(bool))
        move = np.abs(frame["close"].to_numpy(float) / ref - 1)
        bad = frame[(move > pct + 0.0051) & ~frame["suspended"].to_numpy(bool)]
        out += [{"rule": "price_limit", "code": code, "date": str(d.date())}
                for d in bad["date"]]
    return out


def validation_report(bars: pd.DataFrame) -> dict[str, Any]:
    problems = validate_bars(bars)
    problems += [{"rule": "calendar_gap", "code": c, "date": str(d.date())}
                 for c, d in calendar_gaps(bars)]
    problems += limit_breaches(bars)
    problems += factor_mismatches(bars)
    counts: dict[str, int] = {}
    for p in problems:
        counts[str(p["rule"])] = counts.get(str(p["rule"]), 0) + 1
    return {"rows": len(bars), "codes": int(bars["code"].nunique()), "ok": not problems,
            "counts": counts, "violations": problems[:1000]}


def clean(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop duplicates and impossible bars, fill calendar gaps as suspended days, mark
    zero-volume days suspended. Prices stay as traded: adjusted series are derived where
    they are used (:mod:`raytasks.quant.corporate`), never stored adjusted to a later date."""
    report = {"rows_in": len(bars)}
    out = bars.drop_duplicates(["code", "date"], keep="last")
    report["duplicates"] = len(bars) - len(out)
    live = ~out["suspended"]
    bad = live & ((out["high"] < out[["open", "close", "low"]].max(axis=1))
                  | (out["low"] > out[["open", "close", "high"]].min(axis=1))
                  | (out[["open", "high", "low", "close"]] <= 0).any(axis=1))
    report["bad_ohlc"] = int(bad.sum())
    out = out[~bad]
    zero = (out["volume"] <= 0) & ~out["suspended"]
    report["zero_volume_marked_suspended"] = int(zero.sum())
    out = out.assign(suspended=out["suspended"] | (out["volume"] <= 0))
    gaps = calendar_gaps(out)
    report["gaps_filled"] = len(gaps)
    if gaps:
        filler = pd.DataFrame(gaps, columns=["code", "date"])
        out = pd.concat([out, filler]).sort_values(["code", "date"])
        price_cols = ["open", "high", "low", "close"]
        out["close"] = out.groupby("code")["close"].ffill()
        for column in price_cols[:-1]:
            out[column] = out[column].fillna(out["close"])
        out = out.fillna({"volume": 0.0, "amount": 0.0, "suspended": True,
                          **dict.fromkeys(EVENT_COLUMNS, 0.0)})
        out["adj_factor"] = out.groupby("code")["adj_factor"].ffill()
        out["is_st"] = out.groupby("code")["is_st"].ffill().fillna(False).astype(bool)
        out["suspended"] = out["suspended"].astype(bool)
    report["rows_out"] = len(out)
    return out.reset_index(drop=True), report
