"""A seeded generator of realistic daily bars on the real trading calendar.

Returns follow GARCH(1,1) with Student-t innovations (volatility clustering,
fat tails); closes and opens respect each board's price limits; stocks are
suspended for stretches (flat bars, zero volume) and some carry ST periods
(with the tighter ST limit). Same seed and codes, same bars.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from .calendar import trading_days
from .market import limit_pct_series, limit_prices


def garch_returns(n: int, omega: float, alpha: float, beta: float, rng: np.random.Generator,
                  dof: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Returns and conditional variances of a GARCH(1,1) with unit-variance t innovations."""
    z = rng.standard_t(dof, size=n) * np.sqrt((dof - 2.0) / dof)
    var = np.empty(n)
    ret = np.empty(n)
    var[0] = omega / max(1e-12, 1.0 - alpha - beta)
    for t in range(n):
        if t:
            var[t] = omega + alpha * ret[t - 1] ** 2 + beta * var[t - 1]
        ret[t] = np.sqrt(var[t]) * z[t]
    return ret, var


#: every series is generated over this whole span and then sliced, so a stock's bars on a
#: given day are the same whatever range is asked for (incremental syncs line up)
SPAN = ("2007-01-04", "2026-12-31")


def generate_bars(codes: list[str], start: str, end: str, seed: int = 7,
                  suspension_rate: float = 0.002, st_share: float = 0.1) -> pd.DataFrame:
    """Daily bars for ``codes`` over the sessions from ``start`` to ``end``."""
    dates = trading_days(*SPAN)
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    if lo < dates[0] or hi > dates[-1] or lo > hi:
        raise ValueError(f"synthetic bars cover {SPAN[0]} to {SPAN[1]}; asked {start}..{end}")
    frames = []
    for code in codes:
        rng = np.random.default_rng([seed, zlib.crc32(code.encode())])
        frame = _one(code, dates, rng, suspension_rate, st_share)
        frames.append(frame[(frame["date"] >= lo) & (frame["date"] <= hi)])
    return pd.concat(frames, ignore_index=True)


def _one(code: str, dates: pd.DatetimeIndex, rng: np.random.Generator,
         suspension_rate: float, st_share: float) -> pd.DataFrame:
    n = len(dates)
    daily_vol = rng.uniform(0.015, 0.03)
    alpha, beta = rng.uniform(0.05, 0.1), rng.uniform(0.85, 0.9)
    omega = daily_vol**2 * (1 - alpha - beta)
    ret, _ = garch_returns(n, omega, alpha, beta, rng)
    ret += rng.normal(0.0002, 0.0001)
    is_st = np.zeros(n, dtype=bool)
    if rng.random() < st_share:
        a = int(rng.integers(0, max(1, n - 60)))
        is_st[a:a + int(rng.integers(60, 250))] = True
    suspended = np.zeros(n, dtype=bool)
    t = 1
    while t < n:
        if rng.random() < suspension_rate:
            length = int(rng.geometric(0.2))
            suspended[t:t + length] = True
            t += length
        t += 1
    pct = limit_pct_series(code, dates, is_st)
    price0 = float(np.exp(rng.uniform(np.log(3), np.log(80))))
    open_, high, low, close = (np.empty(n) for _ in range(4))
    prev = price0
    for t in range(n):
        if suspended[t]:
            open_[t] = high[t] = low[t] = close[t] = prev
            continue
        up, down = limit_prices(np.array([prev]), np.array([pct[t]]))
        c = float(np.clip(np.round(prev * np.exp(ret[t]), 2), down[0], up[0]))
        gap = rng.normal(0, 0.3) * abs(ret[t]) + rng.normal(0, 0.002)
        o = float(np.clip(np.round(prev * np.exp(gap), 2), down[0], up[0]))
        spread = abs(rng.normal(0, 0.6 * daily_vol))
        h = float(min(up[0], np.round(max(o, c) * (1 + spread / 2), 2)))
        lo = float(max(down[0], np.round(min(o, c) * (1 - spread / 2), 2)))
        open_[t], high[t], low[t], close[t] = o, h, lo, c
        prev = c
    volume = np.where(suspended, 0.0, np.round(
        np.exp(rng.normal(15.5, 0.4, n)) * (1 + 20 * np.abs(ret)), -2))
    amount = np.round(volume * (open_ + high + low + close) / 4, 2)
    return pd.DataFrame({
        "code": code, "date": dates, "open": open_, "high": high, "low": low, "close": close,
        "volume": volume, "amount": amount, "adj_factor": 1.0, "is_st": is_st,
        "suspended": suspended,
    })
