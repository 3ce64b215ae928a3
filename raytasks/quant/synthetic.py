"""A seeded generator of realistic daily bars on the real trading calendar.

Returns follow GARCH(1,1) with Student-t innovations (volatility clustering, fat tails);
prices start from a level typical of the board (a few well-known codes from their own)
and are pulled weakly towards it; closes and opens respect each board's price limits;
stocks are suspended for stretches (flat bars, zero volume) and some carry ST periods.

Corporate actions: most years a stock pays a cash dividend (ex-date in May-July), and a
stock trading well above its level may add bonus (送股) or transfer (转增) shares. On the
ex-date prices move from the exchange's reference price, and ``adj_factor`` grows by
``prev_close / reference`` as vendors' factors do.

Bars run to the last completed XSHG session. Each year's random draws come from their own
stream, so a stock's bars on a day never depend on the range asked for, nor on how far the
calendar reaches: incremental syncs line up.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from numba import njit

from .calendar import calendar_end, completed_through, trading_days
from .market import board, limit_pct_series

FIRST_SESSION = "2007-01-04"
#: typical price levels (CNY) by board, and a few well-known codes at their own
BOARD_LEVEL = {"main": 10.0, "chinext": 25.0, "star": 40.0, "bse": 12.0}
KNOWN_LEVEL = {"000001.SZ": 10.0, "600000.SH": 9.0, "600519.SH": 1500.0, "300750.SZ": 250.0,
               "002594.SZ": 300.0, "688111.SH": 280.0, "688981.SH": 90.0, "601318.SH": 50.0}


def garch_returns(n: int, omega: float, alpha: float, beta: float, rng: np.random.Generator,
                  dof: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Returns and conditional variances of a GARCH(1,1) with unit-variance t innovations."""
    z = rng.standard_t(dof, size=n) * np.sqrt((dof - 2.0) / dof)
    return _garch_path(z, omega, alpha, beta)


def _garch_path(z: np.ndarray, omega: float, alpha: float,
                beta: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(z)
    var = np.empty(n)
    ret = np.empty(n)
    var[0] = omega / max(1e-12, 1.0 - alpha - beta)
    for t in range(n):
        if t:
            var[t] = omega + alpha * ret[t - 1] ** 2 + beta * var[t - 1]
        ret[t] = np.sqrt(var[t]) * z[t]
    return ret, var


def generate_bars(codes: list[str], start: str, end: str | None = None, seed: int = 7,
                  suspension_rate: float = 0.002, st_share: float = 0.1) -> pd.DataFrame:
    """Daily bars for ``codes`` over the sessions from ``start`` to ``end`` (default and at
    most: the last completed session)."""
    last = min(pd.Timestamp(completed_through()), calendar_end())
    hi = min(pd.Timestamp(end or last), last)
    lo = pd.Timestamp(start)
    if lo < pd.Timestamp(FIRST_SESSION) or lo > hi:
        raise ValueError(f"synthetic bars cover {FIRST_SESSION} to the last completed "
                         f"session ({last.date()}); asked {start}..{end}")
    # whole years, so each year's streams draw the same count whatever the end
    dates = trading_days(FIRST_SESSION, min(pd.Timestamp(f"{hi.year}-12-31"), calendar_end()))
    frames = []
    for code in codes:
        frame = _one(code, dates, seed, suspension_rate, st_share)
        frames.append(frame[(frame["date"] >= lo) & (frame["date"] <= hi)])
    return pd.concat(frames, ignore_index=True)


def _yearly(dates: pd.DatetimeIndex, seed: int, code_key: int,
            dof: float) -> dict[str, np.ndarray]:
    """Per-day draws, each year from its own stream (stable whatever the span)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("z", "gap", "jitter", "spread", "vol", "susp",
                                           "length", "ev")}
    years = np.asarray(dates.year)
    for year in np.unique(years):
        n = int((years == year).sum())
        rng = np.random.default_rng([seed, code_key, int(year)])
        parts["z"].append(rng.standard_t(dof, n) * np.sqrt((dof - 2.0) / dof))
        parts["gap"].append(rng.normal(0.0, 0.3, n))
        parts["jitter"].append(rng.normal(0.0, 0.002, n))
        parts["spread"].append(np.abs(rng.normal(0.0, 1.0, n)))
        parts["vol"].append(rng.normal(15.5, 0.4, n))
        parts["susp"].append(rng.random(n))
        parts["length"].append(rng.geometric(0.2, n).astype(float))
        # this year's events: ex-date position, dividend yield, share-issue draw and size
        ev = np.zeros(n)
        ev[:4] = rng.random(4)
        parts["ev"].append(ev)
    return {k: np.concatenate(v) for k, v in parts.items()}


@njit(cache=True)
def _r2(x: float) -> float:
    return float(np.rint(x * 100.0) / 100.0)  # np.round(x, 2), as limit_prices rounds


@njit(cache=True)
def _prices(ret: np.ndarray, gap: np.ndarray, jitter: np.ndarray, spread: np.ndarray,
            suspended: np.ndarray, pct: np.ndarray, plan: np.ndarray, level: float,
            first: float, daily_vol: float) -> tuple[np.ndarray, ...]:
    """OHLC, the adjustment factor and the events, day by day from the first price."""
    n = len(ret)
    open_, high, low, close, factor = (np.empty(n), np.empty(n), np.empty(n), np.empty(n),
                                       np.empty(n))
    cash, bonus, transfer = np.zeros(n), np.zeros(n), np.zeros(n)
    prev, f = first, 1.0
    for t in range(n):
        base = prev
        if plan[t, 0] > 0.0:
            cash[t] = _r2(plan[t, 1] * prev * 10.0) / 10.0  # announced per 10 shares
            u = plan[t, 2]
            ratio = 0.0
            if prev > 1.4 * level and u < 0.5:  # 高送转 when the price runs high
                ratio = min(1.0, max(0.2, np.rint((prev / level - 1.0) * 10.0) / 10.0))
            elif u > 0.8:  # a modest issue in other years
                ratio = 0.1 * np.ceil((u - 0.8) * 25.0)
            if u < 0.2 or 0.8 < u < 0.88:
                bonus[t] = ratio
            else:
                transfer[t] = ratio
            base = _r2((prev - cash[t]) / (1.0 + bonus[t] + transfer[t]) + 1e-9)
        f *= prev / base
        factor[t] = f
        if suspended[t]:
            open_[t] = high[t] = low[t] = close[t] = base
            prev = base
            continue
        up = _r2(base * (1.0 + pct[t]) + 1e-9)
        down = _r2(base * (1.0 - pct[t]) + 1e-9)
        pull = 0.004 * np.log(level / base)  # a weak pull towards the stock's level
        c = min(max(_r2(base * np.exp(ret[t] + pull)), down), up)
        o = min(max(_r2(base * np.exp(gap[t] * abs(ret[t]) + jitter[t])), down), up)
        half = 0.3 * daily_vol * spread[t]
        high[t] = min(up, _r2(max(o, c) * (1.0 + half)))
        low[t] = max(down, _r2(min(o, c) * (1.0 - half)))
        open_[t], close[t] = o, c
        prev = c
    return open_, high, low, close, factor, cash, bonus, transfer


def _events(dates: pd.DatetimeIndex, draws: np.ndarray) -> list[tuple[int, float, float]]:
    """(index of the ex-date, dividend yield, share-issue draw) for each year's event."""
    out = []
    years = np.asarray(dates.year)
    for year in np.unique(years):
        idx = np.flatnonzero(years == year)
        u_day, u_yield, u_pay, u_share = draws[idx[0]:idx[0] + 4]
        window = idx[(dates[idx].month >= 5) & (dates[idx].month <= 7)]
        if len(window) == 0 or u_pay > 0.8 or window[0] == 0:
            continue
        out.append((int(window[int(u_day * len(window))]), 0.005 + 0.025 * u_yield, u_share))
    return out


def _one(code: str, dates: pd.DatetimeIndex, seed: int, suspension_rate: float,
         st_share: float) -> pd.DataFrame:
    key = zlib.crc32(code.encode())
    rng = np.random.default_rng([seed, key])  # per-stock constants: a fixed number of draws
    daily_vol = rng.uniform(0.015, 0.03)
    alpha, beta = rng.uniform(0.05, 0.1), rng.uniform(0.85, 0.9)
    drift = rng.normal(0.0002, 0.0001)
    level = KNOWN_LEVEL.get(code, BOARD_LEVEL[board(code)] * float(np.exp(rng.normal(0, 0.5))))
    start_level = level * float(np.exp(rng.normal(0.0, 0.3)))
    st_start, st_len, st_draw = int(rng.integers(0, 4700)), int(rng.integers(60, 250)), rng.random()
    n = len(dates)
    d = _yearly(dates, seed, key, 5.0)
    ret, _ = _garch_path(d["z"], daily_vol**2 * (1 - alpha - beta), alpha, beta)
    ret += drift
    is_st = np.zeros(n, dtype=bool)
    if st_draw < st_share:
        is_st[st_start:st_start + st_len] = True
    suspended = np.zeros(n, dtype=bool)
    t = 1
    while t < n:
        if d["susp"][t] < suspension_rate:
            length = int(d["length"][t])
            suspended[t:t + length] = True
            t += length
        t += 1
    pct = limit_pct_series(code, dates, is_st)
    plan = np.zeros((n, 3))  # per day: event?, dividend yield, share-issue draw
    for i, dividend_yield, u_share in _events(dates, d["ev"]):
        plan[i] = (1.0, dividend_yield, u_share)
    open_, high, low, close, factor, cash, bonus, transfer = _prices(
        ret, d["gap"], d["jitter"], d["spread"], suspended, pct, plan, level,
        round(start_level, 2), daily_vol)
    volume = np.where(suspended, 0.0, np.round(np.exp(d["vol"]) * (1 + 20 * np.abs(ret)), -2))
    amount = np.round(volume * (open_ + high + low + close) / 4, 2)
    return pd.DataFrame({
        "code": code, "date": dates, "open": open_, "high": high, "low": low, "close": close,
        "volume": volume, "amount": amount, "adj_factor": factor, "cash_div": cash,
        "bonus_ratio": bonus, "transfer_ratio": transfer, "is_st": is_st,
        "suspended": suspended,
    })
