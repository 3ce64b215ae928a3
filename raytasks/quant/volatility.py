"""Volatility models: EWMA, GARCH(1,1) by maximum likelihood, HAR-RV; and the QLIKE loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
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
        """Conditional variances for each day, and the next day's at the end (the recursion
        starts from the backcast, as in the fit)."""
        e = np.asarray(returns, float) - self.mu
        return _garch_filter(e, self.omega, self.alpha, self.beta, backcast(e))

    def forecast(self, returns: np.ndarray, horizon: int) -> np.ndarray:
        """Variance forecasts for days 1..horizon after the last return."""
        nxt = self.variances(returns)[-1]
        lr, p = self.long_run_variance, self.persistence
        return np.array([lr + p ** (h - 1) * (nxt - lr) for h in range(1, horizon + 1)])


@njit(cache=True)
def _garch_filter(e: np.ndarray, omega: float, alpha: float, beta: float,
                  bc: float) -> np.ndarray:
    v = np.empty(len(e) + 1)
    v[0] = omega + (alpha + beta) * bc
    for t in range(len(e)):
        v[t + 1] = omega + alpha * e[t] ** 2 + beta * v[t]
    return v


def backcast(residuals: np.ndarray) -> float:
    """The variance before the first day: RiskMetrics weights (0.94**i) on the first 75
    squared residuals, the convention of the ``arch`` package."""
    tau = min(75, len(residuals))
    w = 0.94 ** np.arange(tau)
    return float(np.sum(residuals[:tau] ** 2 * w / w.sum()))


@njit(cache=True)
def _nll_grad(theta: np.ndarray, x: np.ndarray, bc: float) -> tuple[float, np.ndarray]:
    """Gaussian negative log-likelihood of GARCH(1,1) and its exact gradient.

    sigma2[0] = omega + (alpha + beta) * bc, then
    sigma2[t] = omega + alpha * e[t-1]**2 + beta * sigma2[t-1]; the derivatives of sigma2
    follow the same recursion.
    """
    mu, omega, alpha, beta = theta[0], theta[1], theta[2], theta[3]
    nll = 0.0
    grad = np.zeros(4)
    s = omega + (alpha + beta) * bc
    d_mu, d_om, d_al, d_be = 0.0, 1.0, bc, bc
    e_prev = 0.0
    for t in range(len(x)):
        if t > 0:
            d_mu = -2.0 * alpha * e_prev + beta * d_mu
            d_om = 1.0 + beta * d_om
            d_al = e_prev * e_prev + beta * d_al
            d_be = s + beta * d_be
            s = omega + alpha * e_prev * e_prev + beta * s
        if s <= 0.0:
            return 1e300, grad
        e = x[t] - mu
        nll += 0.5 * (1.8378770664093453 + np.log(s) + e * e / s)
        k = 0.5 * (1.0 / s - e * e / (s * s))
        grad[0] += k * d_mu - e / s
        grad[1] += k * d_om
        grad[2] += k * d_al
        grad[3] += k * d_be
        e_prev = e
    return nll, grad


def fit_garch(returns: np.ndarray) -> Garch:
    """Gaussian quasi-maximum likelihood estimate of GARCH(1,1) with a constant mean.

    The likelihood and its gradient are compiled (numba); SLSQP solves with the
    stationarity constraint alpha + beta < 1 from the best of a small grid of starts.
    The data are scaled to unit variance first (better conditioned), and ``backcast``
    starts the variance recursion as ``arch`` does, so the two agree on the estimates.
    """
    r = np.asarray(returns, dtype=float)
    if len(r) < 100:
        raise ValueError(f"GARCH needs at least 100 returns, got {len(r)}")
    scale = float(np.std(r))
    x = r / scale
    bc = backcast(x - x.mean())
    starts = [np.array([x.mean(), 1.0 - p, a, p - a]) for a in (0.02, 0.05, 0.1, 0.2)
              for p in (0.8, 0.9, 0.95, 0.99)]
    start = min(starts, key=lambda th: _nll_grad(th, x, bc)[0])
    res = minimize(_nll_grad, start, args=(x, bc), jac=True, method="SLSQP",
                   bounds=[(-1.0, 1.0), (1e-8, 10.0), (0.0, 1.0), (0.0, 1.0)],
                   constraints=[{"type": "ineq", "fun": lambda th: 1.0 - 1e-6 - th[2] - th[3],
                                 "jac": lambda th: np.array([0.0, 0.0, -1.0, -1.0])}],
                   options={"ftol": 1e-12, "maxiter": 500})
    mu, omega, alpha, beta = res.x
    return Garch(omega=float(omega * scale**2), alpha=float(alpha), beta=float(beta),
                 mu=float(mu * scale), loglik=float(-res.fun - len(r) * np.log(scale)))


def fit_garch_reference(returns: np.ndarray) -> Garch:
    """The same estimate by plain Python and scipy (Nelder-Mead on the likelihood, no
    gradient): the baseline of ``raytasks bench volatility``."""
    r = np.asarray(returns, dtype=float)
    scale = float(np.std(r))
    x = r / scale
    bc = backcast(x - x.mean())

    def nll(theta: np.ndarray) -> float:
        mu, omega, alpha, beta = theta
        if omega <= 0 or alpha < 0 or beta < 0 or alpha + beta >= 0.9999:
            return 1e10
        e = x - mu
        v = np.empty(len(x))
        v[0] = omega + (alpha + beta) * bc
        for t in range(1, len(x)):
            v[t] = omega + alpha * e[t - 1] ** 2 + beta * v[t - 1]
        return float(0.5 * np.sum(np.log(2 * np.pi * v) + e**2 / v))

    best = None
    for a0, b0 in ((0.05, 0.9), (0.1, 0.8), (0.2, 0.7)):
        res = minimize(nll, np.array([np.mean(x), 1 - a0 - b0, a0, b0]), method="Nelder-Mead",
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
