"""Corporate actions: a hand-computed ex-rights case, the dividend tax by regime and holding
period, agreement with a run on adjusted prices, continuity of equity, factors and vendors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from raytasks.quant.adapters import from_tushare
from raytasks.quant.backtest import Market, run
from raytasks.quant.cleaning import validation_report
from raytasks.quant.costs import CostModel
from raytasks.quant.signals import sma_crossover
from raytasks.quant.synthetic import generate_bars


def _bars(dates: list[str], opens: list[float], closes: list[float], code: str = "000001.SZ",
          **events: list[float]) -> pd.DataFrame:
    n = len(dates)
    return pd.DataFrame({
        "code": code, "date": pd.to_datetime(dates), "open": opens,
        "high": np.maximum(opens, closes), "low": np.minimum(opens, closes), "close": closes,
        "volume": 1e6, "amount": 1e7, "adj_factor": 1.0,
        **{k: events.get(k, [0.0] * n) for k in ("cash_div", "bonus_ratio", "transfer_ratio")},
        "is_st": False, "suspended": False})


HOLD = np.nan  # a NaN target keeps the position as it is (no re-balancing)
DAYS = ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08"]
TEN_FOR_TEN = {"transfer_ratio": [0, 0, 0, 1.0, 0], "cash_div": [0, 0, 0, 0.5, 0]}


def test_a_sell_on_the_ex_date_uses_limits_from_the_reference_price() -> None:
    # Given 4,900 shares bought at 20.00, then 10转10 with 0.50 cash a share (10派5): the
    # reference price is (20.00 - 0.50) / 2 = 9.75, so limit-down is 8.78, not 18.00
    bars = _bars(DAYS, [20, 20, 20, 9.00, 9.10], [20, 20, 20, 9.10, 9.10], **TEN_FOR_TEN)
    m = Market.from_bars(bars)
    assert (m.limit_down[3], m.limit_up[3]) == (8.78, 10.73)
    # When the position is sold at the open of the ex-date, at 9.00
    res = run(m, np.array([1, 1, 0, 0, 0.0]), cash=100_000)
    # Then 9,800 shares (4,900 converted) sell at 9.00; the 2,450 CNY dividend was credited
    # gross and, held two days, is taxed 20 % at the sale (财税[2015]101号)
    buy_fee = 98_000 * 0.00025 + 98_000 * 0.00001
    sell_fee = 88_200 * 0.00025 + 88_200 * 0.0005 + 88_200 * 0.00001
    cash = 100_000 - 98_000 - buy_fee + 2_450 + 88_200 - sell_fee - 490
    assert list(res.trades["qty"]) == [4_900, 9_800]
    assert res.trades["date"].iloc[1] == pd.Timestamp("2024-03-07")
    np.testing.assert_allclose(res.trades["tax"], [0, 490])
    np.testing.assert_allclose(res.equity, [100_000, 100_000 - buy_fee, 100_000 - buy_fee,
                                            cash, cash], rtol=1e-12)
    assert (res.dividends, res.dividend_tax) == (2_450, 490)


def test_equity_is_continuous_at_the_reference_price() -> None:
    # Given the same 10转10 + 10派5, held through the ex-date, which closes at 9.75
    bars = _bars(DAYS, [20, 20, 20, 9.75, 9.75], [20, 20, 20, 9.75, 9.75], **TEN_FOR_TEN)
    res = run(Market.from_bars(bars), np.array([1, HOLD, HOLD, HOLD, HOLD]), cash=100_000)
    # Then nothing is lost or made on the ex-date: 1,974.52 + 2,450 + 9,800 * 9.75
    assert res.equity[3] == pytest.approx(res.equity[2], abs=1e-9)
    assert res.equity[3] == pytest.approx(1_974.52 + 2_450 + 9_800 * 9.75, abs=1e-9)


@pytest.mark.parametrize("bought,record,ex,sold,withheld,at_sale", [
    ("2012-05-02", "2012-06-14", "2012-06-15", "2012-06-18", 100, 0),    # 10 % when paid
    ("2014-06-03", "2014-06-16", "2014-06-17", "2014-06-20", 50, 150),   # 5 % + 15 %
    ("2014-01-02", "2014-06-16", "2014-06-17", "2014-06-20", 50, 50),    # 5 % + 5 %
    ("2013-03-01", "2014-06-16", "2014-06-17", "2014-06-20", 50, 0),     # held > 1 year
    ("2016-05-16", "2016-06-14", "2016-06-15", "2016-06-17", 0, 200),    # one month: 20 %
    ("2016-05-16", "2016-06-14", "2016-06-15", "2016-06-20", 0, 100),    # a day over: 10 %
    ("2015-01-05", "2016-06-14", "2016-06-15", "2016-06-17", 0, 0),      # held > 1 year
])
def test_dividend_tax_by_regime_and_holding_period(bought: str, record: str, ex: str, sold: str,
                                                   withheld: float, at_sale: float) -> None:
    # Given 1,000 shares held from `bought` and a 1.00 CNY dividend with record date `record`
    bars = _bars([bought, record, ex, sold], [10, 10, 9, 9], [10, 10, 9, 9],
                 cash_div=[0, 0, 1.0, 0])
    # When they are sold at the open of `sold`
    hold_then_sell = np.array([HOLD, HOLD, 0, 0])
    res = run(Market.from_bars(bars), hold_then_sell, cash=0.0, shares=1_000)
    # Then the tax is what the notice in force says
    assert res.dividends == 1_000
    assert res.dividend_tax == pytest.approx(withheld + at_sale)
    assert res.trades["tax"].iloc[0] == pytest.approx(at_sale)
    untaxed = run(Market.from_bars(bars), hold_then_sell, cash=0.0, shares=1_000,
                  costs=CostModel(dividend_tax=False))
    assert untaxed.equity[-1] - res.equity[-1] == pytest.approx(withheld + at_sale)


def test_bonus_shares_are_taxed_at_par_and_transfer_shares_are_not() -> None:
    # Given 1,000 shares and 10送10 (bonus) vs 10转10 (transfer), sold within a month
    days = ["2016-06-01", "2016-06-14", "2016-06-15", "2016-06-17"]
    bonus = run(Market.from_bars(_bars(days, [10, 10, 5, 5], [10, 10, 5, 5],
                                       bonus_ratio=[0, 0, 1.0, 0])),
                np.array([HOLD, HOLD, 0, 0]), cash=0.0, shares=1_000)
    transfer = run(Market.from_bars(_bars(days, [10, 10, 5, 5], [10, 10, 5, 5],
                                          transfer_ratio=[0, 0, 1.0, 0])),
                   np.array([HOLD, HOLD, 0, 0]), cash=0.0, shares=1_000)
    # Then both sell 2,000 shares; the bonus owes 20 % of 1,000 shares x 1 CNY par
    assert list(bonus.trades["qty"]) == list(transfer.trades["qty"]) == [2_000]
    assert (bonus.dividend_tax, transfer.dividend_tax) == (200, 0)


def _no_cash_events(bars: pd.DataFrame) -> pd.DataFrame:
    """The bars with every event turned into transfer shares, and the factor that preserves
    value exactly (a vendor's factor uses the reference price rounded to the fen)."""
    out = bars.copy()
    out["transfer_ratio"] = out["transfer_ratio"] + out["bonus_ratio"]
    out["transfer_ratio"] = np.where(out["cash_div"] > 0, out["transfer_ratio"] + 0.1,
                                     out["transfer_ratio"])
    out["bonus_ratio"] = out["cash_div"] = 0.0
    out["adj_factor"] = np.cumprod(1.0 + out["transfer_ratio"].to_numpy())
    return out


def test_a_run_on_raw_prices_with_share_events_equals_a_run_on_adjusted_prices() -> None:
    # Given bars with share events, and the same market on prices adjusted by the factor
    # (limits scaled alike, no events), both in fractional shares so lots round alike
    bars = _no_cash_events(generate_bars(["000001.SZ"], "2015-09-01", "2024-12-31", seed=3))
    assert (bars["transfer_ratio"] > 0).sum() >= 5
    raw = replace(Market.from_bars(bars), lot_min=0.0, lot_step=0.0)
    k = raw.factor / raw.factor[0]
    adj = replace(raw, open=raw.open * k, close=raw.close * k, limit_up=raw.limit_up * k,
                  limit_down=raw.limit_down * k, ratio=np.ones_like(k),
                  cash_div=np.zeros_like(k), taxable=np.zeros_like(k), factor=np.ones_like(k))
    for fast, slow in [(5, 20), (10, 60)]:
        target = sma_crossover(raw.adjusted_close, fast, slow)
        # When both run the same signals with costs
        a, b = run(raw, target), run(adj, target)
        # Then they agree: converting holdings on ex-dates is what adjusting prices does
        np.testing.assert_allclose(a.equity, b.equity, rtol=1e-9)
        np.testing.assert_allclose(a.trades["fee"], b.trades["fee"], rtol=1e-9)
        assert len(a.trades) > 10


def test_equity_moves_on_ex_dates_only_by_the_price_move_from_the_reference() -> None:
    # Given synthetic bars with many ex-dates, bought and held in whole lots, untaxed
    bars = generate_bars(["300750.SZ"], "2010-01-01", "2024-12-31", seed=5)
    m = Market.from_bars(bars)
    buy_and_hold = np.full(len(m.close), HOLD)
    buy_and_hold[0] = 1.0
    res = run(m, buy_and_hold, cash=1_000_000, costs=CostModel(dividend_tax=False))
    shares = res.trades["qty"].sum()
    ex = np.flatnonzero((m.ratio != 1.0) | (m.cash_div != 0.0))
    assert len(ex) >= 10
    prev = np.concatenate([[m.close[0]], m.close[:-1]])
    for t in ex:
        after = np.floor(shares * m.ratio[t] + 1e-6)
        ref = (prev[t] - m.cash_div[t]) / m.ratio[t]
        # Then equity changes by the move from the reference price, up to the fen rounding
        # of the reference and the fraction of a share a bonus drops
        move = after * (m.close[t] - ref)
        assert abs(res.equity[t] - res.equity[t - 1] - move) <= 0.005 * after + ref
        shares = after


def test_a_factor_without_events_converts_holdings_by_its_jump() -> None:
    # Given a source with only an adjustment factor that doubles on day 3 (a 10转10)
    bars = _bars(DAYS, [20, 20, 20, 10, 10], [20, 20, 20, 10, 10]).drop(
        columns=["cash_div", "bonus_ratio", "transfer_ratio"])
    bars["adj_factor"] = [1.0, 1.0, 1.0, 2.0, 2.0]
    res = run(Market.from_bars(bars), np.array([1, HOLD, HOLD, HOLD, HOLD]), cash=100_000)
    # Then 4,900 shares become 9,800 and equity stays where it was
    assert res.equity[3] == pytest.approx(res.equity[2])


def test_tushare_dividend_plans_become_ex_date_events() -> None:
    daily = pd.DataFrame({"ts_code": "000001.SZ", "trade_date": ["20240613", "20240614"],
                          "open": [10.30, 9.62], "high": [10.35, 9.70], "low": [10.21, 9.55],
                          "close": [10.32, 9.64], "vol": [1e6, 1e6], "amount": [1e6, 1e6]})
    dividend = pd.DataFrame({"ts_code": ["000001.SZ", "000001.SZ"],
                             "end_date": ["20231231", "20241231"],
                             "div_proc": ["实施", "预案"], "stk_div": [0.0, 0.0],
                             "stk_bo_rate": [0.0, None], "stk_co_rate": [0.0, None],
                             "cash_div": [0.6471, 0.0], "cash_div_tax": [0.719, 0.0],
                             "ex_date": ["20240614", None]})
    bars = from_tushare(daily, dividend=dividend)
    assert list(bars["cash_div"]) == [0.0, 0.719]  # before tax; the plan not yet done: none
    assert Market.from_bars(bars).limit_down[1] == pytest.approx(8.64)  # from 9.60


def test_synthetic_ex_dates_pass_validation_and_a_wrong_factor_is_reported() -> None:
    bars = generate_bars(["000001.SZ", "688111.SH"], "2012-01-01", "2024-12-31")
    assert (bars["cash_div"] > 0).sum() >= 10
    report = validation_report(bars)
    assert report["ok"], report["counts"]
    broken = bars.copy()
    day = broken.index[(broken["cash_div"] > 0)][0]
    broken.loc[day:, "adj_factor"] *= 1.5
    assert validation_report(broken)["counts"] == {"adj_factor": 1}
