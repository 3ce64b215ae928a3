"""Lot rules, one case each: whole board lots on buys, odd lots (from corporate actions) sold
only whole, and STAR Market orders of at least 200 shares in steps of 1."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raytasks.quant.backtest import Market, run
from raytasks.quant.costs import CostModel
from raytasks.quant.market import lot_rule

HOLD = np.nan


def _flat(code: str, price: float, n: int, **events: list[float]) -> Market:
    dates = pd.bdate_range("2024-03-04", periods=n)
    return Market.from_bars(pd.DataFrame({
        "code": code, "date": dates, "open": price, "high": price, "low": price,
        "close": price, "volume": 1e6, "amount": 1e7, "adj_factor": 1.0,
        **{k: events.get(k, [0.0] * n) for k in ("cash_div", "bonus_ratio", "transfer_ratio")},
        "is_st": False, "suspended": False}))


def test_lot_rules_by_board() -> None:
    assert lot_rule("000001.SZ") == lot_rule("300750.SZ") == (100, 100)
    assert lot_rule("688111.SH") == (200, 1)
    assert lot_rule("430047.BJ") == (100, 1)


def test_a_buy_from_an_odd_position_is_in_whole_lots() -> None:
    # Given 250 shares (an odd lot of 50) and cash for about 10,000 shares at 10.00
    m = _flat("000001.SZ", 10.0, 3)
    # When fully invested
    res = run(m, np.ones(3), cash=97_600.0, shares=250)
    # Then the buy is whole lots (9,700, not 9,750), leaving 9,950 shares
    assert list(res.trades["qty"]) == [9_700]
    assert res.equity[-1] == res.equity[1]


def test_an_odd_lot_from_a_bonus_stays_until_a_full_exit_sells_it_whole() -> None:
    # Given 1,000 shares and 10送3.5 on day 1: 1,350 shares, an odd lot of 50
    m = _flat("000001.SZ", 10.0, 5, bonus_ratio=[0, 0.35, 0, 0, 0])
    # When the weight halves on day 1 and goes to zero on day 3
    res = run(m, np.array([HOLD, 0.5, HOLD, 0, 0]), cash=0.0, shares=1_000,
              costs=CostModel(dividend_tax=False))
    # Then half (675 shares) rounds to a target of 600, and the partial sell is whole lots:
    # 700, keeping 650 with the odd 50; the full exit sells those 650 in one order
    assert list(res.trades["qty"]) == [700, 650]
    assert list(res.trades["side"]) == ["sell", "sell"]


def test_a_partial_sell_never_splits_an_odd_lot() -> None:
    # Given 250 shares and a target of 200 (50 to sell)
    m = _flat("000001.SZ", 10.0, 3)
    res = run(m, np.array([0.8, 0.8, 0.8]), cash=0.0, shares=250)
    # Then nothing is sold: 50 shares can only go with the whole position
    assert res.trades.empty


def test_star_buys_at_least_200_then_steps_of_one() -> None:
    # Given a STAR stock at 100.00 and cash for 299.7 shares after fees
    m = _flat("688111.SH", 100.0, 3)
    res = run(m, np.ones(3), cash=30_000.0)
    # Then 299 shares are bought (steps of 1), not 200 or 300
    assert list(res.trades["qty"]) == [299]
    # and with cash for only 190 shares, nothing: an order needs 200
    assert run(m, np.ones(3), cash=19_000.0).trades.empty


def test_star_sells_at_least_200_or_the_whole_remainder() -> None:
    m = _flat("688111.SH", 100.0, 3)
    # 500 shares to 250: 250 sold (>= 200, any step)
    assert list(run(m, np.full(3, 0.5), cash=0.0, shares=500).trades["qty"]) == [250]
    # 350 to 200: 150 cannot be sold alone (under 200, and not the whole holding)
    assert run(m, np.full(3, 200 / 350), cash=0.0, shares=350).trades.empty
    # 150 shares (from a bonus, say): only a full exit sells them, whole
    assert list(run(m, np.zeros(3), cash=0.0, shares=150).trades["qty"]) == [150]
