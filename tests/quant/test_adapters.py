"""Vendor frames (in their own column names, units and string types) to the schema."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from raytasks.quant.adapters import exchange_of, from_akshare, from_baostock, from_tushare
from raytasks.quant.market import BAR_COLUMNS, validate_bars

DATA = Path(__file__).parent.parent / "data"


def test_tushare_lots_and_thousands_become_shares_and_cny() -> None:
    daily = pd.read_csv(DATA / "tushare_daily.csv", dtype={"trade_date": str})
    adj = pd.read_csv(DATA / "tushare_adj.csv", dtype={"trade_date": str})
    bars = from_tushare(daily, adj)
    assert list(bars.columns) == list(BAR_COLUMNS)
    first = bars.iloc[0]
    assert first["date"] == pd.Timestamp("2024-01-02")  # sorted by date
    assert first["volume"] == pytest.approx(115_836_645.0)  # 1,158,366.45 lots
    assert first["amount"] == pytest.approx(1_075_742_252.0)  # thousands of CNY
    assert first["adj_factor"] == pytest.approx(116.011)
    assert validate_bars(bars) == []


def test_akshare_chinese_columns_and_codes_without_suffix() -> None:
    bars = from_akshare(pd.read_csv(DATA / "akshare_hist.csv", dtype={"股票代码": str}))
    assert set(bars["code"]) == {"600000.SH"}
    assert bars["volume"].iloc[0] == 25_930_600.0 and bars["amount"].iloc[0] == 170357112.0
    assert validate_bars(bars) == []


def test_baostock_strings_suspension_and_st() -> None:
    raw = pd.read_csv(DATA / "baostock_k.csv", dtype=str)
    bars = from_baostock(raw)
    assert list(bars["code"].unique()) == ["300750.SZ"]
    assert bars["close"].dtype == float and bars["close"].iloc[0] == pytest.approx(158.01)
    assert list(bars["suspended"]) == [False, False, True]
    assert not bars["is_st"].any()


def test_exchange_inference() -> None:
    assert [exchange_of(c) for c in ("600000", "688981", "000001", "300750", "430047",
                                     "830799", "920001")] == ["SH", "SH", "SZ", "SZ", "BJ",
                                                              "BJ", "BJ"]
