"""Adapters from data vendors' daily bars to the normalised schema.

Units differ by vendor, and this is where they are made equal: the schema's
``volume`` is in shares and ``amount`` in CNY.

- Tushare ``pro.daily``: ``ts_code``, ``trade_date`` ("20240102"), ``vol`` in lots
  (手, 100 shares), ``amount`` in thousands of CNY (千元); ``adj_factor`` from
  ``pro.adj_factor``.
- AKShare ``stock_zh_a_hist``: Chinese column names (日期, 开盘, 收盘, 最高, 最低,
  成交量 in lots, 成交额 in CNY), six-digit codes without an exchange suffix.
- Baostock ``query_history_k_data_plus``: every value a string; codes like
  "sh.600000"; ``volume`` in shares, ``amount`` in CNY; ``tradestatus`` "0" on a
  suspended day; ``isST`` "1"/"0".

The ``fetch_*`` functions call the vendor libraries (optional extras
``tushare``, ``akshare``, ``baostock``); the mapping functions are pure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .market import BAR_COLUMNS, OPTIONAL_DEFAULTS


def exchange_of(digits: str) -> str:
    """SH for 6xxxxx (and 9xxxxx B shares), BJ for 4/8xxxxx and 92xxxx, else SZ."""
    if digits.startswith("92") or digits[0] in "48":
        return "BJ"
    if digits[0] in "69":
        return "SH"
    return "SZ"


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in frame:
            frame[column] = default
    frame = frame.fillna({"cash_div": 0.0, "bonus_ratio": 0.0, "transfer_ratio": 0.0})
    frame["suspended"] = frame["suspended"] | (frame["volume"] <= 0)
    return frame[list(BAR_COLUMNS)].astype(
        {"open": float, "high": float, "low": float, "close": float, "volume": float,
         "amount": float, "adj_factor": float, "cash_div": float, "bonus_ratio": float,
         "transfer_ratio": float, "is_st": bool, "suspended": bool}) \
        .sort_values(["code", "date"]).reset_index(drop=True)


def from_tushare(daily: pd.DataFrame, adj: pd.DataFrame | None = None,
                 dividend: pd.DataFrame | None = None) -> pd.DataFrame:
    """``pro.daily`` bars, with ``pro.adj_factor`` factors and ``pro.dividend`` events.

    From the dividend table, rows with an ``ex_date`` (implemented plans) give, per share:
    ``cash_div_tax`` (cash before tax), ``stk_bo_rate`` (送股) and ``stk_co_rate`` (转增).
    """
    out = pd.DataFrame({
        "code": daily["ts_code"], "date": pd.to_datetime(daily["trade_date"], format="%Y%m%d"),
        "open": daily["open"], "high": daily["high"], "low": daily["low"],
        "close": daily["close"], "volume": daily["vol"] * 100.0,
        "amount": daily["amount"] * 1000.0,
    })
    if adj is not None:
        factors = adj.assign(date=pd.to_datetime(adj["trade_date"], format="%Y%m%d")) \
            .rename(columns={"ts_code": "code"})[["code", "date", "adj_factor"]]
        out = out.merge(factors, on=["code", "date"], how="left")
    if dividend is not None:
        done = dividend[dividend["ex_date"].notna() & (dividend["ex_date"].astype(str) != "")]
        events = pd.DataFrame({
            "code": done["ts_code"],
            "date": pd.to_datetime(done["ex_date"].astype(str), format="%Y%m%d"),
            "cash_div": pd.to_numeric(done["cash_div_tax"]).fillna(0.0),
            "bonus_ratio": pd.to_numeric(done["stk_bo_rate"]).fillna(0.0),
            "transfer_ratio": pd.to_numeric(done["stk_co_rate"]).fillna(0.0),
        }).groupby(["code", "date"], as_index=False).sum()
        out = out.merge(events, on=["code", "date"], how="left")
    return _finish(out)


def from_akshare(hist: pd.DataFrame, code: str | None = None) -> pd.DataFrame:
    digits = hist["股票代码"].astype(str).str.zfill(6) if "股票代码" in hist else \
        pd.Series([str(code).split(".")[0]] * len(hist), index=hist.index)
    out = pd.DataFrame({
        "code": digits + "." + digits.map(exchange_of),
        "date": pd.to_datetime(hist["日期"]),
        "open": hist["开盘"], "high": hist["最高"], "low": hist["最低"], "close": hist["收盘"],
        "volume": hist["成交量"] * 100.0, "amount": hist["成交额"],
    })
    return _finish(out)


def from_baostock(rows: pd.DataFrame) -> pd.DataFrame:
    num = {k: pd.to_numeric(rows[k].replace("", np.nan)) for k in
           ("open", "high", "low", "close", "volume", "amount")}
    market, digits = rows["code"].str.split(".", n=1).str[0], rows["code"].str.split(".").str[1]
    out = pd.DataFrame({
        "code": digits + "." + market.str.upper(), "date": pd.to_datetime(rows["date"]),
        **num,
        "is_st": rows.get("isST", pd.Series("0", index=rows.index)) == "1",
        "suspended": rows.get("tradestatus", pd.Series("1", index=rows.index)) == "0",
    })
    return _finish(out)


def fetch_tushare(code: str, start: str, end: str, token: str) -> pd.DataFrame:
    import tushare as ts  # optional extra

    pro: Any = ts.pro_api(token)
    s, e = start.replace("-", ""), end.replace("-", "")
    return from_tushare(pro.daily(ts_code=code, start_date=s, end_date=e),
                        pro.adj_factor(ts_code=code, start_date=s, end_date=e),
                        pro.dividend(ts_code=code))


def fetch_akshare(code: str, start: str, end: str) -> pd.DataFrame:
    import akshare as ak  # optional extra

    hist = ak.stock_zh_a_hist(symbol=code[:6], period="daily", start_date=start.replace("-", ""),
                              end_date=end.replace("-", ""), adjust="")
    return from_akshare(hist, code)


def fetch_baostock(code: str, start: str, end: str) -> pd.DataFrame:
    import baostock as bs  # optional extra

    bs.login()
    try:
        digits, exchange = code.split(".")
        result = bs.query_history_k_data_plus(
            f"{exchange.lower()}.{digits}",
            "date,code,open,high,low,close,volume,amount,tradestatus,isST",
            start_date=start, end_date=end, frequency="d", adjustflag="3")
        return from_baostock(result.get_data())
    finally:
        bs.logout()
