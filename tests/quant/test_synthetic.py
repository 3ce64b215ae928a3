"""Synthetic bars look like the market: to the last completed session, at board price levels,
with ex-rights events, and the same bars on a day whatever range is asked for."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from raytasks.quant.calendar import SHANGHAI, completed_through, last_completed_session
from raytasks.quant.synthetic import generate_bars


def test_the_last_completed_session_follows_the_close_in_shanghai() -> None:
    # 2024-10-08 is the first session after the National Day holiday
    before_close = datetime(2024, 10, 8, 14, 59, tzinfo=SHANGHAI)
    after_close = datetime(2024, 10, 8, 15, 0, tzinfo=SHANGHAI)
    assert last_completed_session(before_close) == pd.Timestamp("2024-09-30")
    assert last_completed_session(after_close) == pd.Timestamp("2024-10-08")
    assert completed_through(before_close) == "2024-10-07"


def test_bars_run_to_the_last_completed_session_by_default() -> None:
    bars = generate_bars(["000001.SZ"], "2026-01-01")
    assert bars["date"].max() == last_completed_session()
    later = generate_bars(["000001.SZ"], "2026-01-01", "2030-12-31")  # no bars from the future
    assert later["date"].max() == last_completed_session()


def test_price_levels_are_realistic_per_board() -> None:
    # 000001.SZ (Ping An Bank) trades around 10 CNY; boards sit at their typical levels
    recent = generate_bars(["000001.SZ"], "2024-01-01", "2024-12-31")
    assert 5 <= recent["close"].median() <= 20
    codes = {"main": [f"600{i:03d}.SH" for i in range(10, 40)],
             "chinext": [f"300{i:03d}.SZ" for i in range(10, 40)],
             "star": [f"688{i:03d}.SH" for i in range(10, 40)]}
    medians = {b: generate_bars(c, "2024-01-01", "2024-12-31").groupby("code")["close"]
               .median().median() for b, c in codes.items()}
    assert 5 <= medians["main"] <= 20 and 12 <= medians["chinext"] <= 50
    assert 20 <= medians["star"] <= 80 and medians["main"] < medians["star"]


def test_stocks_have_yearly_dividends_and_some_share_issues() -> None:
    bars = generate_bars([f"000{i:03d}.SZ" for i in range(1, 21)], "2014-01-01", "2024-12-31")
    per_stock = bars[bars["cash_div"] > 0].groupby("code").size()
    assert per_stock.min() >= 5  # most years pay
    issues = bars[(bars["bonus_ratio"] > 0) | (bars["transfer_ratio"] > 0)]
    assert issues["code"].nunique() >= 10
    ex = bars[bars["cash_div"] > 0]
    assert set(ex["date"].dt.month) <= {5, 6, 7}
    yields = ex["cash_div"] / bars["close"].shift(1).loc[ex.index]
    assert 0.003 < yields.median() < 0.04


def test_the_same_day_has_the_same_bar_whatever_the_range() -> None:
    whole = generate_bars(["600000.SH", "688111.SH"], "2010-01-01", "2024-12-31")
    part = generate_bars(["600000.SH", "688111.SH"], "2016-03-01", "2016-09-30")
    merged = part.merge(whole, on=["code", "date"], suffixes=("", "_w"))
    assert len(merged) == len(part)
    for column in ("open", "close", "volume", "adj_factor", "cash_div", "suspended"):
        np.testing.assert_array_equal(merged[column], merged[f"{column}_w"])
