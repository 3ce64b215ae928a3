"""A-share market structure: boards, daily price limits, lot rules, ex-rights reference prices,
and the daily-bar schema."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd

LOT = 100
CODE = re.compile(r"^(\d{6})\.(SZ|SH|BJ)$")

#: the normalised daily bar, prices unadjusted (as traded): volume in shares, amount in CNY.
#: ``adj_factor`` is the vendor's cumulative adjustment factor (后复权: it grows at each
#: ex-date, so ``close * adj_factor`` uses only factors published up to that day).
#: On an ex-date (除权除息日) the event columns hold, per share held at the record date:
#: ``cash_div`` the cash dividend before tax (CNY), ``bonus_ratio`` bonus shares from profits
#: (送股, taxed as dividend income at the 1 CNY par value) and ``transfer_ratio`` shares
#: from the capital reserve (转增, untaxed); 0 on every other day.
BAR_COLUMNS = {
    "code": "object", "date": "datetime64[ns]", "open": "float64", "high": "float64",
    "low": "float64", "close": "float64", "volume": "float64", "amount": "float64",
    "adj_factor": "float64", "cash_div": "float64", "bonus_ratio": "float64",
    "transfer_ratio": "float64", "is_st": "bool", "suspended": "bool",
}
EVENT_COLUMNS = ("cash_div", "bonus_ratio", "transfer_ratio")
#: defaults of the columns a source may not have
OPTIONAL_DEFAULTS: dict[str, object] = {
    "adj_factor": 1.0, "cash_div": 0.0, "bonus_ratio": 0.0, "transfer_ratio": 0.0,
    "is_st": False, "suspended": False,
}

CHINEXT_20PCT_FROM = date(2020, 8, 24)


def board(code: str) -> str:
    """``main``, ``chinext``, ``star`` or ``bse`` for a code like ``300750.SZ``."""
    match = CODE.match(code)
    if not match:
        raise ValueError(f"{code!r} is not an A-share code like 000001.SZ, 600000.SH, 430047.BJ")
    digits, exchange = match.groups()
    if exchange == "BJ":
        return "bse"
    if exchange == "SH":
        return "star" if digits.startswith(("688", "689")) else "main"
    return "chinext" if digits.startswith(("300", "301")) else "main"


def limit_pct(code: str, day: date, is_st: bool) -> float:
    """The daily price limit as a fraction of the previous close.

    Main board ±10 % (±5 % when ST); ChiNext ±20 % from 2020-08-24 (±10 %, ST ±5 %,
    before); STAR ±20 %; Beijing Stock Exchange ±30 %.
    """
    kind = board(code)
    if kind == "star":
        return 0.20
    if kind == "bse":
        return 0.30
    if kind == "chinext" and day >= CHINEXT_20PCT_FROM:
        return 0.20
    return 0.05 if is_st else 0.10


def limit_prices(prev_close: np.ndarray, pct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Limit-up and limit-down prices, rounded to the fen as the exchanges publish them."""
    up = np.round(prev_close * (1.0 + pct) + 1e-9, 2)
    down = np.round(prev_close * (1.0 - pct) + 1e-9, 2)
    return up, down


def lot_rule(code: str) -> tuple[float, float]:
    """(minimum shares per buy order, step above it) for the code's board.

    Main board and ChiNext: whole lots of 100. STAR Market: at least 200 shares, then steps
    of 1 share. Beijing Stock Exchange: at least 100, then steps of 1.
    """
    kind = board(code)
    if kind == "star":
        return 200.0, 1.0
    if kind == "bse":
        return 100.0, 1.0
    return float(LOT), float(LOT)


def reference_price(prev_close: np.ndarray, cash_div: np.ndarray, bonus: np.ndarray,
                    transfer: np.ndarray) -> np.ndarray:
    """The exchange's ex-rights/ex-dividend reference price (除权除息参考价), to the fen.

    ``(prev_close - cash_div) / (1 + bonus + transfer)`` on an ex-date; the previous close
    on any other day. Price limits on an ex-date are taken from this price.
    """
    prev = np.asarray(prev_close, float)
    event = (np.asarray(cash_div) != 0) | (np.asarray(bonus) != 0) | (np.asarray(transfer) != 0)
    ref = np.round((prev - cash_div) / (1.0 + bonus + transfer) + 1e-9, 2)
    return np.where(event, ref, prev)


def limit_pct_series(code: str, dates: pd.DatetimeIndex, is_st: np.ndarray) -> np.ndarray:
    return np.array([limit_pct(code, d.date(), bool(st)) for d, st in zip(dates, is_st,
                                                                          strict=True)])


def validate_bars(df: pd.DataFrame) -> list[dict[str, object]]:
    """Every violation of the schema and of OHLC sanity, one row each (empty when clean)."""
    problems: list[dict[str, object]] = []
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        return [{"rule": "columns", "detail": f"missing {missing}"}]
    dup = df.duplicated(["code", "date"], keep=False)
    for _, row in df[dup].iterrows():
        problems.append({"rule": "duplicate", "code": row["code"], "date": str(row["date"])})
    live = df[~df["suspended"]]
    bad = live[(live["high"] < live[["open", "close", "low"]].max(axis=1))
               | (live["low"] > live[["open", "close", "high"]].min(axis=1))
               | (live[["open", "high", "low", "close"]] <= 0).any(axis=1)]
    for _, row in bad.iterrows():
        problems.append({"rule": "ohlc", "code": row["code"], "date": str(row["date"])})
    negative = df[(df["volume"] < 0) | (df["amount"] < 0)]
    for _, row in negative.iterrows():
        problems.append({"rule": "negative_volume", "code": row["code"],
                         "date": str(row["date"])})
    return problems
