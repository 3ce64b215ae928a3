"""Corporate actions: ex-date events, the adjustment factor, and adjusted series.

Vendors deliver unadjusted bars plus a cumulative adjustment factor (Tushare's
``adj_factor``, 后复权), and, where they have them, the ex-date events (cash dividend, bonus
and transfer shares per share). On an ex-date the factor grows by
``prev_close / reference_price``, so ``close * adj_factor`` is continuous across it.

Adjusted series here are ``price * adj_factor`` and ``volume / adj_factor``: each day uses
only the factor published that day, so nothing leaks from later ex-dates (unlike adjusting
history to today's price level). Every ratio feature of such a series equals the one of the
series adjusted as of each date, since the two differ by one constant factor per date.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .market import EVENT_COLUMNS, reference_price


def event_arrays(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cash_div, bonus_ratio, transfer_ratio) of one stock's bars sorted by date.

    A source with an adjustment factor but no events: each factor jump becomes the share
    ratio that preserves value (as if the dividend were paid in shares), so holdings stay
    continuous across it.
    """
    n = len(bars)
    cols = [bars[c].fillna(0.0).to_numpy(float) if c in bars else np.zeros(n)
            for c in EVENT_COLUMNS]
    cash, bonus, transfer = cols
    if not (cash.any() or bonus.any() or transfer.any()) and "adj_factor" in bars and n > 1:
        f = bars["adj_factor"].ffill().fillna(1.0).to_numpy(float)
        jump = np.concatenate([[1.0], f[1:] / f[:-1]])
        transfer = np.where(np.abs(jump - 1.0) > 1e-9, jump - 1.0, 0.0)
    return cash, bonus, transfer


def reference_prices(close: np.ndarray, cash: np.ndarray, bonus: np.ndarray,
                     transfer: np.ndarray) -> np.ndarray:
    """Each day's reference price for its limits: the previous close, ex-rights on ex-dates."""
    close = np.asarray(close, float)
    prev = np.concatenate([[close[0]], close[:-1]])
    return reference_price(prev, cash, bonus, transfer)


def factor_from_events(close: np.ndarray, cash: np.ndarray, bonus: np.ndarray,
                       transfer: np.ndarray, start: float = 1.0) -> np.ndarray:
    """The cumulative adjustment factor implied by the events (vendor convention)."""
    close = np.asarray(close, float)
    prev = np.concatenate([[close[0]], close[:-1]])
    ref = reference_price(prev, cash, bonus, transfer)
    return start * np.cumprod(np.where(ref > 0, prev / ref, 1.0))


def adjusted(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars with prices multiplied and volume divided by the adjustment factor."""
    out = bars.copy()
    f = out["adj_factor"].fillna(1.0) if "adj_factor" in out else 1.0
    for column in ("open", "high", "low", "close"):
        out[column] = out[column] * f
    out["volume"] = out["volume"] / f
    return out


def adjusted_close(bars: pd.DataFrame) -> np.ndarray:
    """One stock's close times its adjustment factor, in date order."""
    b = bars.sort_values("date")
    f = b["adj_factor"].fillna(1.0).to_numpy(float) if "adj_factor" in b else 1.0
    return np.asarray(b["close"].to_numpy(float) * f)


def factor_mismatches(bars: pd.DataFrame, rel: float = 2e-3) -> list[dict[str, object]]:
    """Ex-dates whose factor jump disagrees with the events (or factor jumps with no event,
    where the source has events at all)."""
    out: list[dict[str, object]] = []
    if not all(c in bars for c in EVENT_COLUMNS) or "adj_factor" not in bars:
        return out
    for code, frame in bars.groupby("code"):
        frame = frame.sort_values("date")
        cash, bonus, transfer = (frame[c].fillna(0.0).to_numpy(float) for c in EVENT_COLUMNS)
        if not (cash.any() or bonus.any() or transfer.any()):
            continue
        f = frame["adj_factor"].to_numpy(float)
        expected = factor_from_events(frame["close"].to_numpy(float), cash, bonus, transfer)
        got = f / f[0]
        bad = np.abs(got[1:] / got[:-1] / (expected[1:] / expected[:-1]) - 1.0) > rel
        out += [{"rule": "adj_factor", "code": code, "date": str(d.date())}
                for d in frame["date"].iloc[1:][bad]]
    return out
