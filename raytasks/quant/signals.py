"""Strategy signals: target weights from data up to each close, on adjusted prices.

Every comparison follows one **tie rule**: ``a`` is above ``b`` only when
``a - b > TIE * |b|`` (``TIE = 1e-9``). Two correct ways of computing a mean differ by about
1e-15 relative, and prices in whole fen differ by at least 1e-6 relative when they differ at
all, so with the rule a signal does not depend on how the mean was summed: exact ties
(a flat stretch, a suspension) read as "not above" whatever the rounding. Means are
compensated (Neumaier) sums over each window, not differences of a running cumulative sum,
whose error grows with the length of the series.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TIE = 1e-9
#: a window is flat when its deviation is within FLAT * |mean|: a square root turns a
#: variance's rounding (1e-17 of the mean squared, as a running variance leaves it) into
#: 1e-8 of the mean, while one fen over 60 days at 1,000 CNY is still 1.3e-6 of it
FLAT = 1e-6


@njit(cache=True)
def _window_sum(values: np.ndarray, start: int, stop: int) -> float:
    total = 0.0
    comp = 0.0
    for i in range(start, stop):
        v = values[i]
        s = total + v
        if abs(total) >= abs(v):
            comp += (total - s) + v
        else:
            comp += (v - s) + total
        total = s
    return total + comp


@njit(cache=True)
def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of each full window ending at t (NaN before, or if the window has a NaN)."""
    n = len(values)
    out = np.full(n, np.nan)
    for t in range(window - 1, n):
        out[t] = _window_sum(values, t - window + 1, t + 1) / window
    return out


@njit(cache=True)
def rolling_std(values: np.ndarray, window: int) -> np.ndarray:
    """The sample standard deviation (ddof=1) of each full window ending at t."""
    n = len(values)
    out = np.full(n, np.nan)
    dev = np.empty(window)
    for t in range(window - 1, n):
        m = _window_sum(values, t - window + 1, t + 1) / window
        for i in range(window):
            d = values[t - window + 1 + i] - m
            dev[i] = d * d
        out[t] = np.sqrt(_window_sum(dev, 0, window) / (window - 1))
    return out


def above(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a > b`` under the tie rule (False where either is NaN)."""
    with np.errstate(invalid="ignore"):
        return np.asarray((a - b) > TIE * np.abs(b))


def sma_signal(fast_mean: np.ndarray, slow_mean: np.ndarray) -> np.ndarray:
    return above(fast_mean, slow_mean).astype(float)


def sma_crossover(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """Fully invested while the fast SMA is above the slow one (tie rule)."""
    if not 0 < fast < slow:
        raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")
    c = np.asarray(close, float)
    return sma_signal(rolling_mean(c, fast), rolling_mean(c, slow))


def momentum(close: np.ndarray, lookback: int) -> np.ndarray:
    """Invested while the close is above the close ``lookback`` days before (tie rule)."""
    c = np.asarray(close, float)
    out = np.zeros(len(c))
    out[lookback:] = above(c[lookback:], c[:-lookback])
    return out


def mean_reversion(close: np.ndarray, window: int, entry_z: float = 1.0) -> np.ndarray:
    """Buy when the close is more than ``entry_z`` sample deviations under its mean; exit
    when it is back at or above the mean (both under the tie rule). While the window is
    flat (see ``FLAT``) the position is kept."""
    c = np.asarray(close, float)
    mean, sd = rolling_mean(c, window), rolling_std(c, window)
    out = np.zeros(len(c))
    holding = 0.0
    for t in range(len(c)):
        if not sd[t] > FLAT * abs(mean[t]):  # NaN, or a flat window
            out[t] = holding
            continue
        gap = c[t] - mean[t]
        if holding == 0.0 and -gap - entry_z * sd[t] > TIE * abs(mean[t]):
            holding = 1.0
        elif holding == 1.0 and not (-gap > TIE * abs(mean[t])):
            holding = 0.0
        out[t] = holding
    return out
