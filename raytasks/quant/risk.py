"""Return and risk statistics of an equity curve, under one set of conventions.

- Returns are simple daily returns of the equity marked at each close.
- A year has ``DAYS = 243`` trading days: the mean number of SSE/SZSE sessions a year
  (2007-2025, the XSHG calendar).
- Deviations are sample deviations (``ddof=1``) everywhere.
- The risk-free rate ``rf`` is annual, simple, taken as ``rf / DAYS`` a day; 0 by default.
- Sharpe = mean(r - rf/DAYS) / std(r, ddof=1) * sqrt(DAYS); 0 when returns do not vary.
- Sortino divides by the downside deviation, the root mean square of the shortfalls below
  ``rf/DAYS`` over all days (its standard definition).

The parameter sweep, the risk task and every report call :func:`sharpe`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm

DAYS = 243


def returns(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, float)
    return e[1:] / e[:-1] - 1.0


def sharpe(daily: np.ndarray, rf: float = 0.0) -> float:
    """The annualised Sharpe ratio of daily returns (module conventions)."""
    r = np.asarray(daily, float)
    if len(r) < 2:
        return 0.0
    sd = float(r.std(ddof=1))
    return float((r.mean() - rf / DAYS) / sd * np.sqrt(DAYS)) if sd > 0 else 0.0


def max_drawdown(equity: np.ndarray) -> float:
    """The largest fall from a running peak, as a positive fraction."""
    e = np.asarray(equity, float)
    peaks = np.maximum.accumulate(e)
    return float(np.max(1.0 - e / peaks)) if len(e) else 0.0


def var_cvar(daily: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """One-day Value at Risk and Expected Shortfall as positive losses, both methods."""
    r = np.asarray(daily, float)
    cut = np.quantile(r, 1 - level)
    tail = r[r <= cut]
    mu, sd = float(r.mean()), float(r.std(ddof=1))
    z = norm.ppf(1 - level)
    return {
        "var_historical": float(-cut),
        "cvar_historical": float(-tail.mean()) if len(tail) else float(-cut),
        "var_parametric": float(-(mu + z * sd)),
        "cvar_parametric": float(-(mu - sd * norm.pdf(z) / (1 - level))),
    }


def summary(equity: np.ndarray, benchmark: np.ndarray | None = None, rf: float = 0.0,
            level: float = 0.95, traded: float = 0.0) -> dict[str, Any]:
    """Total and annual return, volatility, Sharpe, Sortino, drawdown, VaR/CVaR, beta, turnover.

    ``traded`` is the total traded amount (for turnover = traded / mean equity / years).
    """
    e = np.asarray(equity, float)
    r = returns(e)
    years = len(r) / DAYS
    excess = r - rf / DAYS
    sd = r.std(ddof=1)
    downside = np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))
    out: dict[str, Any] = {
        "total_return": float(e[-1] / e[0] - 1),
        "annual_return": float((e[-1] / e[0]) ** (1 / years) - 1) if years > 0 else 0.0,
        "annual_volatility": float(sd * np.sqrt(DAYS)),
        "sharpe": sharpe(r, rf),
        "sortino": float(excess.mean() / downside * np.sqrt(DAYS)) if downside > 0 else 0.0,
        "max_drawdown": max_drawdown(e),
        "turnover": float(traded / e.mean() / years) if years > 0 else 0.0,
        **var_cvar(r, level),
    }
    if benchmark is not None:
        b = returns(benchmark)
        cov = np.cov(r, b, ddof=1)
        out["beta"] = float(cov[0, 1] / cov[1, 1]) if cov[1, 1] > 0 else 0.0
    return out
