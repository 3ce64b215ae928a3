"""Volatility models: EWMA, GARCH(1,1) by maximum likelihood, HAR-RV; and the QLIKE loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


def ewma_variance(returns: np.ndarray, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics: ``v[t] = lam*v[t-1] + (1-lam)*r[t-1]**2``; ``v[t]`` uses data before t."""
    r = np.asarray(returns, dtype=float)
    v = np.empty(len(r) + 1)
    v[0] = np.var(r[: min(len(r), 20)]) if len(r) else 0.0
    for t in range(len(r)):
        v[t + 1] = lam * v[t] + (1 - lam) * r[t] ** 2
    return v  # v[-1] is the one-step-ahead forecast


@dataclass(frozen=True)
class Garch:
    omega: float
    alpha: float
    beta: float
    mu: float
    loglik: float

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta

    @property
    def long_run_variance(self) -> float:
        return self.omega / max(1e-12, 1 - self.persistence)

    def variances(self, returns: np.ndarray) -> np.ndarray:
        """Conditional variances for each day, and the next day's at the end."""
        return _garch_filter(np.asarray(returns, float) - self.mu, self.omega, self.alpha,
                             self.beta)

    def forecast(self, returns: np.ndarray, horizon: int) -> np.ndarray:
        """Variance forecasts for days 1..horizon after the last return."""
        nxt = self.variances(returns)[-1]
        lr, p = self.long_run_variance, self.persistence
        return np.array([lr + p ** (h - 1) * (nxt - lr) for h in range(1, horizon + 1)])


def _garch_filter(e: np.ndarray, omega: float, alpha: float, beta: float) -> np.ndarray:
    v = np.empty(len(e) + 1)
    v[0] = np.var(e) if len(e) else omega
    for t in range(len(e)):
        v[t + 1] = omega + alpha * e[t] ** 2 + beta * v[t]
    return v


def fit_garch(returns: np.ndarray) -> Garch:
    """Gaussian quasi-maximum likelihood estimate of GARCH(1,1) with a constant mean."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 100:
        raise ValueError(f"GARCH needs at least 100 returns, got {len(r)}")
    scale = float(np.std(r))
    x = r / scale  # fit on unit-scale data: better conditioned

    def nll(theta: np.ndarray) -> float:
        mu, omega, alpha, beta = theta
        if omega <= 0 or alpha < 0 or beta < 0 or alpha + beta >= 0.9999:
            return 1e10
        v = _garch_filter(x - mu, omega, alpha, beta)[:-1]
        return float(0.5 * np.sum(np.log(2 * np.pi * v) + (x - mu) ** 2 / v))

    best = None
    for a0, b0 in ((0.05, 0.9), (0.1, 0.8), (0.2, 0.7)):
        start = np.array([np.mean(x), 1 - a0 - b0, a0, b0])
        res = minimize(nll, start, method="Nelder-Mead",
                       options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-10})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    mu, omega, alpha, beta = best.x
    return Garch(omega=float(omega * scale**2), alpha=float(alpha), beta=float(beta),
                 mu=float(mu * scale), loglik=float(-best.fun - len(r) * np.log(scale)))


def parkinson_variance(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Range-based daily variance: ``ln(H/L)**2 / (4 ln 2)``."""
    return np.log(np.asarray(high) / np.asarray(low)) ** 2 / (4.0 * np.log(2.0))


@dataclass(frozen=True)
class Har:
    coef: np.ndarray  # const, daily, weekly, monthly

    def predict_next(self, rv: np.ndarray) -> float:
        rv = np.asarray(rv, float)
        x = np.array([1.0, rv[-1], rv[-5:].mean(), rv[-22:].mean()])
        return float(max(1e-12, x @ self.coef))


def har_design(rv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows for t = 21..n-2: features known at t, target rv[t+1] (no look-ahead)."""
    rv = np.asarray(rv, float)
    rows, target = [], []
    for t in range(21, len(rv) - 1):
        rows.append([1.0, rv[t], rv[t - 4:t + 1].mean(), rv[t - 21:t + 1].mean()])
        target.append(rv[t + 1])
    return np.array(rows), np.array(target)


def fit_har(rv: np.ndarray) -> Har:
    """Corsi's HAR-RV by least squares on daily, weekly (5) and monthly (22) averages."""
    x, y = har_design(rv)
    if len(y) < 30:
        raise ValueError(f"HAR-RV needs at least 53 days of realised variance, got {len(rv)}")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return Har(coef)


def qlike(realised: np.ndarray, forecast: np.ndarray) -> float:
    """Mean QLIKE loss ``r/f - ln(r/f) - 1`` (0 for a perfect forecast; robust to noise)."""
    r = np.maximum(np.asarray(realised, float), 1e-12)
    f = np.maximum(np.asarray(forecast, float), 1e-12)
    return float(np.mean(r / f - np.log(r / f) - 1.0))
