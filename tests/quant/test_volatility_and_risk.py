"""Volatility models and risk statistics against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raytasks.quant import risk
from raytasks.quant.calendar import is_trading_day, trading_days
from raytasks.quant.corporate import adjusted_close
from raytasks.quant.synthetic import garch_returns, generate_bars
from raytasks.quant.volatility import (
    _nll_grad,
    backcast,
    ewma_variance,
    fit_garch,
    fit_har,
    har_design,
    parkinson_variance,
    qlike,
)


def test_garch_recovers_known_parameters() -> None:
    rng = np.random.default_rng(2024)
    r, _ = garch_returns(8000, omega=2e-6, alpha=0.08, beta=0.90, rng=rng, dof=1e6)
    g = fit_garch(r)
    assert g.alpha == pytest.approx(0.08, abs=0.025)
    assert g.beta == pytest.approx(0.90, abs=0.03)
    assert g.persistence == pytest.approx(0.98, abs=0.01)
    assert g.long_run_variance == pytest.approx(2e-6 / 0.02, rel=0.35)
    fc = g.forecast(r, 10)
    assert np.all(np.diff(np.abs(fc - g.long_run_variance)) <= 1e-15)  # mean-reverting


@pytest.mark.parametrize("code", ["000001.SZ", "600000.SH", "300750.SZ", "688111.SH"])
def test_garch_agrees_with_arch(code: str) -> None:
    from arch import arch_model  # the dev extra: a comparison, not a dependency

    # Given adjusted daily log returns of a stock over nine years
    bars = generate_bars([code], "2016-01-01", "2024-12-31", seed=3)
    r = np.diff(np.log(adjusted_close(bars[~bars["suspended"]])))
    # When both fit a constant-mean Gaussian GARCH(1,1) (arch on percent returns)
    ours = fit_garch(r)
    theirs = arch_model(r * 100, mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                        rescale=False).fit(disp="off")
    p = theirs.params
    # Then the estimates agree to 1e-3 and ours is at least as likely
    assert ours.alpha == pytest.approx(p["alpha[1]"], abs=1e-3)
    assert ours.beta == pytest.approx(p["beta[1]"], abs=1e-3)
    assert ours.omega * 1e4 == pytest.approx(p["omega"], rel=1e-3)
    assert ours.mu * 100 == pytest.approx(p["mu"], abs=1e-3)
    assert ours.loglik >= theirs.loglikelihood + len(r) * np.log(100) - 1e-6


def test_garch_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(5)
    x, _ = garch_returns(1500, omega=0.05, alpha=0.1, beta=0.85, rng=rng)
    theta = np.array([0.01, 0.07, 0.09, 0.88])
    bc = backcast(x - x.mean())
    _, grad = _nll_grad(theta, x, bc)
    for i in range(4):
        h = np.zeros(4)
        h[i] = 1e-6
        numeric = (_nll_grad(theta + h, x, bc)[0] - _nll_grad(theta - h, x, bc)[0]) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=1e-5)


def test_ewma_matches_pandas() -> None:
    r = np.random.default_rng(1).normal(0, 0.02, 300)
    v = ewma_variance(r, lam=0.94)
    # pandas: v[t+1] = 0.94 v[t] + 0.06 r[t]^2 is an exponentially weighted mean of r^2
    seed = np.var(r[:20])
    expected = pd.Series(np.concatenate([[seed], r**2])).ewm(alpha=0.06, adjust=False).mean()
    np.testing.assert_allclose(v, expected.to_numpy(), rtol=1e-12)


def test_har_matches_pandas_rolling_ols_and_never_looks_ahead() -> None:
    rng = np.random.default_rng(3)
    high = 10 * np.exp(np.abs(rng.normal(0, 0.01, 400)))
    low = 10 * np.exp(-np.abs(rng.normal(0, 0.01, 400)))
    rv = parkinson_variance(high, low)
    np.testing.assert_allclose(rv, np.log(high / low) ** 2 / (4 * np.log(2)))
    s = pd.Series(rv)
    frame = pd.DataFrame({"d": s, "w": s.rolling(5).mean(), "m": s.rolling(22).mean(),
                          "y": s.shift(-1)}).iloc[21:-1]
    x = np.column_stack([np.ones(len(frame)), frame[["d", "w", "m"]].to_numpy()])
    coef, *_ = np.linalg.lstsq(x, frame["y"].to_numpy(), rcond=None)
    np.testing.assert_allclose(fit_har(rv).coef, coef, rtol=1e-8)
    design, _ = har_design(rv)
    changed = rv.copy()
    changed[200:] *= 10
    np.testing.assert_array_equal(har_design(changed)[0][: 200 - 21], design[: 200 - 21])


def test_qlike_is_zero_only_for_a_perfect_forecast() -> None:
    r = np.array([1e-4, 2e-4, 4e-4])
    assert qlike(r, r) == pytest.approx(0.0)
    assert qlike(r, r * 2) > 0 and qlike(r, r / 2) > qlike(r, r * 2)


def test_risk_summary_against_direct_formulas() -> None:
    rng = np.random.default_rng(9)
    daily = rng.normal(0.0005, 0.012, 750)
    equity = 1e6 * np.concatenate([[1.0], np.cumprod(1 + daily)])
    bench = 1e6 * np.concatenate([[1.0], np.cumprod(1 + 0.5 * daily + rng.normal(0, 0.01, 750))])
    s = risk.summary(equity, benchmark=bench)
    assert s["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * np.sqrt(243))
    assert s["annual_volatility"] == pytest.approx(daily.std(ddof=1) * np.sqrt(243))
    with_rf = risk.summary(equity, rf=0.02)["sharpe"]
    assert with_rf == pytest.approx((daily - 0.02 / 243).mean() / daily.std(ddof=1)
                                    * np.sqrt(243))
    peak = np.maximum.accumulate(equity)
    assert s["max_drawdown"] == pytest.approx(((peak - equity) / peak).max())
    q = np.quantile(daily, 0.05)
    assert s["var_historical"] == pytest.approx(-q)
    assert s["cvar_historical"] == pytest.approx(-daily[daily <= q].mean())
    b = bench[1:] / bench[:-1] - 1
    assert s["beta"] == pytest.approx(np.cov(daily, b)[0, 1] / np.var(b, ddof=1))
    assert s["var_parametric"] == pytest.approx(-(daily.mean() - 1.6448536 * daily.std(ddof=1)),
                                                rel=1e-6)


def test_a_year_has_the_mean_number_of_sessions_of_the_calendar() -> None:
    sessions = trading_days("2007-01-01", "2025-12-31")
    assert round(len(sessions) / 19) == risk.DAYS


def test_trading_calendar_has_the_real_holidays() -> None:
    assert not is_trading_day("2024-10-01")  # National Day
    assert not is_trading_day("2024-02-12")  # Spring Festival
    assert is_trading_day("2024-09-30")
    assert len(trading_days("2024-01-01", "2024-12-31")) == 242
