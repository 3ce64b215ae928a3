"""An independent, plain re-implementation of the A-share rules, for comparison.

Written straight from the rules (the exchanges' and the tax notices'), not from raytasks'
code: it reads the bars frame row by row, rounds limit prices in exact decimal arithmetic
(half up, as the exchanges publish them), sizes orders by shrinking them one step at a time,
and keeps the tax lots as Python lists with calendar dates.
"""

from __future__ import annotations

import math
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

STAMP = [(date(1900, 1, 1), 0.001, 0.001), (date(2007, 5, 30), 0.003, 0.003),
         (date(2008, 4, 24), 0.001, 0.001), (date(2008, 9, 19), 0.0, 0.001),
         (date(2023, 8, 28), 0.0, 0.0005)]


def fen(x: float) -> float:
    return float(Decimal(repr(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def limit(base: float, pct: float, sign: int) -> float:
    exact = Decimal(repr(base)) * (Decimal(1) + sign * Decimal(repr(pct)))
    return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def pct_of(code: str, day: date, st: bool) -> float:
    if code.startswith(("688", "689")):
        return 0.2
    if code.endswith("BJ"):
        return 0.3
    if code.startswith(("300", "301")) and day >= date(2020, 8, 24):
        return 0.2
    return 0.05 if st else 0.1


def lots_of(code: str) -> tuple[int, int]:
    if code.startswith(("688", "689")):
        return 200, 1
    return 100, 100


def order_fee(day: date, code: str, side: str, qty: float, amount: float,
              comm: float = 0.00025, comm_min: float = 5.0) -> float:
    stamp = [s for s in STAMP if day >= s[0]][-1]
    rate = stamp[1] if side == "buy" else stamp[2]
    if day >= date(2022, 4, 29):
        transfer = 0.00001 * amount
    elif day >= date(2015, 8, 1):
        transfer = 0.00002 * amount
    else:
        transfer = 0.0006 * qty if code.endswith("SH") else 0.0
    return max(comm_min, comm * amount) + rate * amount + transfer


def tax_rule(record: date) -> tuple[float, tuple[float, float, float]]:
    """(withheld when paid, rates at sale by holding band) for a record date."""
    if record < date(2013, 1, 1):
        return 0.10, (0.0, 0.0, 0.0)
    if record < date(2015, 9, 8):
        return 0.05, (0.20, 0.10, 0.05)
    return 0.0, (0.20, 0.10, 0.0)


def simulate(bars: pd.DataFrame, target: list[float], cash: float, shares: float = 0.0,
             taxed: bool = True) -> tuple[list[float], list[tuple]]:
    """Equity at each close and the trades (date, side, qty, price, fee, tax)."""
    rows = bars.sort_values("date").to_dict("records")
    code = rows[0]["code"]
    least, step = lots_of(code)
    # tax lots: [buy date, shares, [(income not yet taxed, withheld rate, rates)]]
    lots: list[list] = [[rows[0]["date"].date(), shares, []]] if shares else []
    equity, trades = [cash + shares * rows[0]["close"]], []
    for t in range(1, len(rows)):
        row, prev = rows[t], rows[t - 1]
        day = row["date"].date()
        div, bonus, transfer = row.get("cash_div", 0.0), row.get("bonus_ratio", 0.0), \
            row.get("transfer_ratio", 0.0)
        base = prev["close"]
        if div or bonus or transfer:
            base = fen((prev["close"] - div) / (1 + bonus + transfer) + 1e-12)
            income = div + bonus * 1.0
            withheld, rates = tax_rule(prev["date"].date()) if taxed else (0.0, (0, 0, 0))
            cash += shares * div - withheld * shares * income
            after = math.floor(shares * (1 + bonus + transfer) + 1e-6)
            for lot in lots:
                if withheld < 0.1 and taxed:
                    lot[2].append((lot[1] * income, withheld, rates))
                lot[1] *= 1 + bonus + transfer
            if lots:
                lots[-1][1] -= sum(lot[1] for lot in lots) - after
            shares = after
        pct = pct_of(code, day, bool(row["is_st"]))
        up, down = limit(base, pct, 1), limit(base, pct, -1)
        w, price = target[t - 1], row["open"]
        if not row["suspended"] and w == w:
            want = math.floor(w * (cash + shares * price) / price / step) * step
            want = want if want >= least else 0
            if want > shares and price < up:
                qty = math.floor((want - shares) / step) * step
                while qty >= least:
                    fee = order_fee(day, code, "buy", qty, qty * price)
                    if qty * price + fee <= cash + 1e-9:
                        cash -= qty * price + fee
                        shares += qty
                        lots.append([day, qty, []])
                        trades.append((row["date"], "buy", qty, price, fee, 0.0))
                        break
                    qty -= step
            elif want < shares and price > down:
                qty = shares if want == 0 else math.floor((shares - want) / step) * step
                if qty >= least or want == 0:
                    fee = order_fee(day, code, "sell", qty, qty * price)
                    tax, left = 0.0, qty
                    for lot in lots:
                        if left <= 1e-9 or lot[1] <= 1e-9:
                            continue
                        take = min(left, lot[1])
                        held_to = day - pd.Timedelta(days=1).to_pytimedelta()
                        band = 0 if held_to <= (pd.Timestamp(lot[0]) + pd.DateOffset(
                            months=1)).date() else 1 if held_to <= (pd.Timestamp(lot[0])
                                                                      + pd.DateOffset(
                                years=1)).date() else 2
                        kept = []
                        for income, withheld, rates in lot[2]:
                            tax += (rates[band] - withheld) * income * take / lot[1]
                            kept.append((income * (1 - take / lot[1]), withheld, rates))
                        lot[2] = kept
                        lot[1] -= take
                        left -= take
                    cash += qty * price - fee - tax
                    shares -= qty
                    trades.append((row["date"], "sell", qty, price, fee, tax))
        equity.append(cash + shares * row["close"])
    return equity, trades
