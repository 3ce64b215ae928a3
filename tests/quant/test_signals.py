"""Every strategy's signal equals a direct pandas computation on a dataset rich in exact
ties, whichever way the means are summed; the sweep reports the one Sharpe ratio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raytasks.quant import risk
from raytasks.quant.backtest import Market, run, sweep_sma
from raytasks.quant.signals import FLAT, TIE, mean_reversion, momentum, rolling_mean, sma_crossover
from raytasks.quant.synthetic import generate_bars


@pytest.fixture(scope="module")
def tied() -> list[np.ndarray]:
    """40 price paths in whole fen that mostly stand still: flat stretches make the fast
    and slow means exactly equal again and again."""
    rng = np.random.default_rng(42)
    paths = []
    for _ in range(40):
        steps = rng.choice([-1, 0, 0, 0, 0, 0, 1], size=1_500) * rng.choice([1, 2], 1_500)
        fen = 1_000 + np.cumsum(steps)
        paths.append(fen / 100.0)
    return paths


def _above(a: pd.Series, b: pd.Series) -> np.ndarray:
    return ((a - b) > TIE * b.abs()).to_numpy(float)


def test_the_dataset_has_ties_that_float_noise_would_split(tied: list[np.ndarray]) -> None:
    # Given the fast and slow means by pandas and by a running cumulative sum (two correct
    # ways), compared naively with ">"
    ties = disagree = 0
    for close in tied:
        s = pd.Series(close)
        fast, slow = s.rolling(5).mean(), s.rolling(20).mean()
        c = np.cumsum(np.insert(close, 0, 0.0))
        cum_fast = np.full(len(close), np.nan)
        cum_slow = np.full(len(close), np.nan)
        cum_fast[4:] = (c[5:] - c[:-5]) / 5
        cum_slow[19:] = (c[20:] - c[:-20]) / 20
        ties += int(((fast - slow).abs() <= 1e-12).sum())
        disagree += int(((fast > slow).to_numpy() != (cum_fast > cum_slow)).sum())
    # Then there are many exact ties, and naive comparisons read some of them differently
    assert ties > 500 and disagree > 0


@pytest.mark.parametrize("fast,slow", [(2, 5), (5, 20), (10, 60)])
def test_sma_signal_equals_pandas_rolling_means(tied: list[np.ndarray], fast: int,
                                                slow: int) -> None:
    for close in tied:
        s = pd.Series(close)
        direct = _above(s.rolling(fast).mean(), s.rolling(slow).mean())
        np.testing.assert_array_equal(sma_crossover(close, fast, slow), direct)


@pytest.mark.parametrize("lookback", [1, 5, 20])
def test_momentum_signal_equals_pandas(tied: list[np.ndarray], lookback: int) -> None:
    for close in tied:
        s = pd.Series(close)
        np.testing.assert_array_equal(momentum(close, lookback),
                                      _above(s, s.shift(lookback)))


@pytest.mark.parametrize("window,entry_z", [(2, 1.0), (10, 1.0), (20, 1.5)])
def test_mean_reversion_signal_equals_pandas(tied: list[np.ndarray], window: int,
                                             entry_z: float) -> None:
    # window 2 puts every down day exactly one deviation under the mean: all ties
    for close in tied:
        s = pd.Series(close)
        mean, sd = s.rolling(window).mean(), s.rolling(window).std(ddof=1)
        direct, holding = [], 0.0
        for c, m, d in zip(close, mean, sd, strict=True):
            if not d > FLAT * abs(m):  # NaN or a flat window: keep the position
                direct.append(holding)
                continue
            if holding == 0.0 and (m - c) - entry_z * d > TIE * abs(m):
                holding = 1.0
            elif holding == 1.0 and not (m - c) > TIE * abs(m):
                holding = 0.0
            direct.append(holding)
        np.testing.assert_array_equal(mean_reversion(close, window, entry_z), direct)


def test_rolling_mean_is_the_compensated_window_mean(tied: list[np.ndarray]) -> None:
    close = tied[0]
    got = rolling_mean(close, 20)
    exact = [np.nan] * 19 + [float(np.mean(np.array(close[t - 19:t + 1], dtype=np.longdouble)))
                             for t in range(19, len(close))]
    np.testing.assert_allclose(got, exact, rtol=1e-15)


def test_the_sweep_reports_the_sharpe_of_the_risk_statistics() -> None:
    # Given one stock and one SMA pair
    m = Market.from_bars(generate_bars(["600000.SH"], "2016-01-01", "2024-12-31"))
    row = sweep_sma(m, [(5, 20)]).iloc[0]
    equity = run(m, sma_crossover(m.adjusted_close, 5, 20)).equity
    daily = equity[1:] / equity[:-1] - 1
    # Then the sweep, the risk summary and the stated formula give one number
    direct = daily.mean() / daily.std(ddof=1) * np.sqrt(243)
    assert row["sharpe"] == pytest.approx(direct, rel=1e-12)
    assert risk.summary(equity)["sharpe"] == pytest.approx(direct, rel=1e-12)
