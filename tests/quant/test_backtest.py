"""The A-share backtest engine against a hand-computed case, an independent implementation
of the rules (tests/quant/reference.py), and rule cases."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from raytasks.quant.backtest import Market, grid, run, sweep_sma
from raytasks.quant.costs import stamp_rates, transfer_fee
from raytasks.quant.market import limit_pct
from raytasks.quant.signals import sma_crossover
from raytasks.quant.synthetic import generate_bars
from tests.quant import reference


def _bars(code: str, opens: list[float], closes: list[float], start: str = "2024-03-04",
          suspended: list[bool] | None = None, st: bool = False, **events: list[float],
          ) -> pd.DataFrame:
    n = len(opens)
    dates = pd.bdate_range(start, periods=n)
    return pd.DataFrame({
        "code": code, "date": dates, "open": opens, "high": np.maximum(opens, closes),
        "low": np.minimum(opens, closes), "close": closes, "volume": 1e6, "amount": 1e7,
        "adj_factor": 1.0, "cash_div": events.get("cash_div", [0.0] * n),
        "bonus_ratio": events.get("bonus_ratio", [0.0] * n),
        "transfer_ratio": events.get("transfer_ratio", [0.0] * n), "is_st": st,
        "suspended": suspended or [False] * n})


def test_hand_computed_round_trip() -> None:
    # Given 000001.SZ in 2024 (stamp duty 0.05 % on sells, transfer fee 0.001 %)
    m = Market.from_bars(_bars("000001.SZ", [10.0, 10.0, 10.5, 11.0, 11.2],
                               [10.0, 10.2, 10.6, 11.1, 11.3]))
    # When it is bought on day 1 and sold on day 3 with 100,000 CNY
    res = run(m, np.array([1, 1, 0, 0, 0.0]), cash=100_000)
    # Then: 10,000 shares do not fit with fees, so 9,900 are bought at 10.00:
    #   fee = commission 0.025 % of 99,000 (24.75) + transfer 0.99 = 25.74
    #   cash = 100,000 - 99,000 - 25.74 = 974.26
    # and sold at 11.00: amount 108,900; fee = 27.225 + stamp 54.45 + transfer 1.089
    buy_fee, sell_fee = 25.74, 27.225 + 54.45 + 1.089
    cash = 100_000 - 99_000 - buy_fee
    expected = [100_000, cash + 9_900 * 10.2, cash + 9_900 * 10.6,
                cash + 108_900 - sell_fee, cash + 108_900 - sell_fee]
    np.testing.assert_allclose(res.equity, expected, rtol=1e-9)
    assert list(res.trades["qty"]) == [9_900, 9_900]
    np.testing.assert_allclose(res.trades["fee"], [buy_fee, sell_fee], rtol=1e-9)
    assert res.fees == pytest.approx(buy_fee + sell_fee)


@pytest.mark.parametrize("code,start,end", [("000001.SZ", "2021-01-01", "2024-06-30"),
                                            ("600000.SH", "2011-01-01", "2016-12-31"),
                                            ("300750.SZ", "2012-06-01", "2021-06-30"),
                                            ("688111.SH", "2016-01-01", "2024-12-31")])
def test_engine_matches_an_independent_implementation(code: str, start: str, end: str) -> None:
    # Given synthetic bars with ex-dates (cash dividends, bonus and transfer shares), ST
    # periods and suspensions, over every dividend-tax regime and both lot rules
    bars = generate_bars([code], start, end, seed=11, suspension_rate=0.01, st_share=1.0)
    shares_issued = bars["bonus_ratio"] + bars["transfer_ratio"]
    assert (bars["cash_div"] > 0).sum() >= 2 and (shares_issued > 0).any()
    m = Market.from_bars(bars)
    for fast, slow in [(3, 8), (5, 20), (10, 60)]:
        target = sma_crossover(m.adjusted_close, fast, slow)
        # When the engine and the plain re-implementation run the same signals
        res = run(m, target, cash=300_000)
        equity, trades = reference.simulate(bars, list(target), 300_000)
        # Then equity, trades, fees and dividend tax agree
        np.testing.assert_allclose(res.equity, equity, rtol=1e-9)
        assert len(res.trades) == len(trades)
        np.testing.assert_allclose(res.trades[["qty", "price", "fee", "tax"]].to_numpy(float),
                                   np.array([t[2:] for t in trades], float), rtol=1e-9,
                                   atol=1e-9)


def test_t_plus_one_and_lots() -> None:
    m = Market.from_bars(_bars("000001.SZ", [10.0] * 6, [10.0] * 6))
    res = run(m, np.array([1, 0, 1, 0, 0, 0.0]), cash=55_555)
    buys = res.trades[res.trades["side"] == "buy"]
    sells = res.trades[res.trades["side"] == "sell"]
    assert (buys["qty"] % 100 == 0).all() and (sells["qty"] % 100 == 0).all()
    # every sell comes at least one session after the buy before it
    for (_, b), (_, s) in zip(buys.iterrows(), sells.iterrows(), strict=True):
        assert s["date"] > b["date"]


def test_odd_lot_is_sold_whole_and_partial_sells_are_in_lots() -> None:
    m = Market.from_bars(_bars("000001.SZ", [10.0] * 4, [10.0] * 4))
    # half of 2,500 CNY is 125 shares, so 100 are wanted: 100 of the 150 to sell go, in lots
    partial = run(m, np.array([0.5, 0.5, 0.5, 0.5]), cash=0.0, shares=250)
    assert list(partial.trades["qty"]) == [100]
    whole = run(m, np.zeros(4), cash=0.0, shares=250)
    assert list(whole.trades["qty"]) == [250]


def test_no_fill_at_the_limit_then_fill_the_next_day() -> None:
    # open at limit-up (+10 % on 10.00) on day 1: the buy waits for day 2
    up = Market.from_bars(_bars("000001.SZ", [10, 11.0, 11.5, 11.5], [10, 11.0, 11.5, 11.5]))
    res = run(up, np.array([1, 1, 1, 1.0]), cash=100_000)
    assert list(res.trades["date"].dt.day) == [pd.bdate_range("2024-03-04", periods=3)[2].day]
    # open at limit-down on day 2: the sell waits for day 3
    down = Market.from_bars(_bars("000001.SZ", [10, 10, 9.0, 9.0], [10, 10, 9.0, 9.1]))
    res = run(down, np.array([1, 0, 0, 0.0]), cash=100_000)
    assert list(res.trades["side"]) == ["buy", "sell"]
    assert res.trades["date"].iloc[1] == pd.bdate_range("2024-03-04", periods=4)[3]


def test_st_and_board_limits() -> None:
    assert limit_pct("000001.SZ", date(2024, 1, 2), is_st=True) == 0.05
    assert limit_pct("300750.SZ", date(2020, 8, 21), is_st=False) == 0.10
    assert limit_pct("300750.SZ", date(2020, 8, 24), is_st=False) == 0.20
    assert limit_pct("688001.SH", date(2024, 1, 2), is_st=True) == 0.20
    assert limit_pct("430047.BJ", date(2024, 1, 2), is_st=False) == 0.30
    # an ST stock opening +5 % is at its limit: no buy; the same open fills when not ST
    opens, closes = [10, 10.5, 10.5], [10, 10.5, 10.5]
    st = run(Market.from_bars(_bars("000001.SZ", opens, closes, st=True)),
             np.array([1, 1, 1.0]), cash=100_000)
    plain = run(Market.from_bars(_bars("000001.SZ", opens, closes)),
                np.array([1, 1, 1.0]), cash=100_000)
    days = pd.bdate_range("2024-03-04", periods=3)
    assert list(plain.trades["date"]) == [days[1]]
    assert list(st.trades["date"]) == [days[2]]  # waits until the open is off the limit


def test_suspended_days_trade_nothing() -> None:
    m = Market.from_bars(_bars("000001.SZ", [10] * 4, [10] * 4,
                               suspended=[False, True, False, False]))
    res = run(m, np.ones(4), cash=100_000)
    assert res.trades["date"].iloc[0] == pd.bdate_range("2024-03-04", periods=3)[2]


def test_commission_minimum_and_stamp_duty_by_date() -> None:
    m = Market.from_bars(_bars("000001.SZ", [10] * 3, [10] * 3))
    small = run(m, np.array([1, 0, 0.0]), cash=1_500)  # 100 shares: 0.25 CNY -> 5 CNY
    assert small.trades["fee"].iloc[0] == pytest.approx(5 + 0.00001 * 1_000)
    assert stamp_rates(date(2023, 8, 25)) == (0.0, 0.001)
    assert stamp_rates(date(2023, 8, 28)) == (0.0, 0.0005)
    assert stamp_rates(date(2008, 5, 1)) == (0.001, 0.001)
    assert transfer_fee(date(2014, 1, 2), "SH", 1_000, 10_000) == pytest.approx(0.6)
    assert transfer_fee(date(2014, 1, 2), "SZ", 1_000, 10_000) == 0.0
    assert transfer_fee(date(2016, 1, 4), "SZ", 1_000, 10_000) == pytest.approx(0.2)


def test_signals_never_look_ahead() -> None:
    bars = generate_bars(["000001.SZ"], "2022-01-01", "2023-12-31")
    close = Market.from_bars(bars).adjusted_close
    base = sma_crossover(close, 5, 20)
    changed = close.copy()
    changed[300:] *= 1.5
    assert np.array_equal(sma_crossover(changed, 5, 20)[:300], base[:300])


def test_sweep_covers_the_grid() -> None:
    m = Market.from_bars(generate_bars(["000001.SZ"], "2023-01-01", "2024-12-31"))
    pairs = grid([2, 5, 10], [10, 20, 30])
    table = sweep_sma(m, pairs)
    assert len(table) == len(pairs) == 8
    single = run(m, sma_crossover(m.adjusted_close, 5, 20))
    row = table[(table.fast == 5) & (table.slow == 20)].iloc[0]
    assert row["total_return"] == pytest.approx(single.total_return)
    assert row["fees"] == pytest.approx(single.fees)
