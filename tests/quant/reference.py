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


class Position:
    """One stock held in real shares, with FIFO tax lots [buy date, shares, incomes], each
    income (amount not yet taxed, rate withheld when paid, rates at sale by holding band)."""

    def __init__(self, code: str, shares: float = 0.0, since: date | None = None) -> None:
        self.code, self.shares = code, shares
        self.least, self.step = lots_of(code)
        self.lots: list[list] = [[since, shares, []]] if shares else []

    def ex_date(self, row: dict, record: date, taxed: bool) -> float:
        """Convert the holding on an ex-date; returns the cash credited."""
        div, bonus, transfer = (row.get(k, 0.0) for k in ("cash_div", "bonus_ratio",
                                                          "transfer_ratio"))
        income = div + bonus * 1.0
        withheld, rates = tax_rule(record) if taxed else (0.0, (0, 0, 0))
        credit = self.shares * div - withheld * self.shares * income
        after = math.floor(self.shares * (1 + bonus + transfer) + 1e-6)
        for lot in self.lots:
            if withheld < 0.1 and taxed:
                lot[2].append((lot[1] * income, withheld, rates))
            lot[1] *= 1 + bonus + transfer
        if self.lots:
            self.lots[-1][1] -= sum(lot[1] for lot in self.lots) - after
        self.shares = after
        return credit

    def want(self, weight: float, value: float, price: float) -> float:
        want = math.floor(weight * value / price / self.step) * self.step
        return want if want >= self.least else 0

    def buy_qty(self, want: float, cash: float, day: date, price: float) -> float:
        qty = math.floor((want - self.shares) / self.step) * self.step
        while qty >= self.least:
            if qty * price + order_fee(day, self.code, "buy", qty, qty * price) <= cash + 1e-9:
                return qty
            qty -= self.step
        return 0

    def sell_qty(self, want: float) -> float:
        qty = self.shares if want == 0 else \
            math.floor((self.shares - want) / self.step) * self.step
        return qty if qty >= self.least or want == 0 else 0

    def sell(self, day: date, qty: float) -> float:
        """Take qty off the oldest lots; returns the dividend tax due."""
        tax, left = 0.0, qty
        held_to = day - pd.Timedelta(days=1).to_pytimedelta()
        for lot in self.lots:
            if left <= 1e-9 or lot[1] <= 1e-9:
                continue
            take = min(left, lot[1])
            month = (pd.Timestamp(lot[0]) + pd.DateOffset(months=1)).date()
            year = (pd.Timestamp(lot[0]) + pd.DateOffset(years=1)).date()
            band = 0 if held_to <= month else 1 if held_to <= year else 2
            kept = []
            for income, withheld, rates in lot[2]:
                tax += (rates[band] - withheld) * income * take / lot[1]
                kept.append((income * (1 - take / lot[1]), withheld, rates))
            lot[2] = kept
            lot[1] -= take
            left -= take
        self.shares -= qty
        return tax


def _has_event(row: dict) -> bool:
    return bool(row.get("cash_div", 0.0) or row.get("bonus_ratio", 0.0)
                or row.get("transfer_ratio", 0.0))


def _limits(code: str, row: dict, prev: dict) -> tuple[float, float]:
    base = prev["close"]
    if _has_event(row):
        base = fen((prev["close"] - row.get("cash_div", 0.0))
                   / (1 + row.get("bonus_ratio", 0.0) + row.get("transfer_ratio", 0.0)) + 1e-12)
    pct = pct_of(code, row["date"].date(), bool(row["is_st"]))
    return limit(base, pct, 1), limit(base, pct, -1)


def simulate(bars: pd.DataFrame, target: list[float], cash: float, shares: float = 0.0,
             taxed: bool = True) -> tuple[list[float], list[tuple]]:
    """Equity at each close and the trades (date, side, qty, price, fee, tax)."""
    rows = bars.sort_values("date").to_dict("records")
    code = rows[0]["code"]
    pos = Position(code, shares, rows[0]["date"].date())
    equity, trades = [cash + shares * rows[0]["close"]], []
    for t in range(1, len(rows)):
        row, prev = rows[t], rows[t - 1]
        day = row["date"].date()
        if _has_event(row):
            cash += pos.ex_date(row, prev["date"].date(), taxed)
        up, down = _limits(code, row, prev)
        w, price = target[t - 1], row["open"]
        if not row["suspended"] and w == w:
            want = pos.want(w, cash + pos.shares * price, price)
            if want > pos.shares and price < up:
                qty = pos.buy_qty(want, cash, day, price)
                if qty:
                    fee = order_fee(day, code, "buy", qty, qty * price)
                    cash -= qty * price + fee
                    pos.shares += qty
                    pos.lots.append([day, qty, []])
                    trades.append((row["date"], "buy", qty, price, fee, 0.0))
            elif want < pos.shares and price > down:
                qty = pos.sell_qty(want)
                if qty:
                    fee = order_fee(day, code, "sell", qty, qty * price)
                    tax = pos.sell(day, qty)
                    cash += qty * price - fee - tax
                    trades.append((row["date"], "sell", qty, price, fee, tax))
        equity.append(cash + pos.shares * row["close"])
    return equity, trades


def simulate_portfolio(bars: pd.DataFrame, weights: pd.DataFrame,
                       cash: float) -> tuple[list[float], list[tuple]]:
    """Stocks on one calendar sharing one cash account: each day ex-dates, then every sell,
    then every buy, in the order of the weights' columns."""
    codes = list(weights.columns)
    rows = {c: bars[bars["code"] == c].sort_values("date").to_dict("records") for c in codes}
    positions = {c: Position(c) for c in codes}
    equity, trades = [cash], []
    for t in range(1, len(rows[codes[0]])):
        day = rows[codes[0]][t]["date"].date()
        for c in codes:
            if _has_event(rows[c][t]):
                cash += positions[c].ex_date(rows[c][t], rows[c][t - 1]["date"].date(), True)
        value = cash + sum(positions[c].shares * rows[c][t]["open"] for c in codes)
        wants = {c: positions[c].want(weights[c].iloc[t - 1], value, rows[c][t]["open"])
                 for c in codes}
        for side in ("sell", "buy"):
            for c in codes:
                row, pos = rows[c][t], positions[c]
                up, down = _limits(c, row, rows[c][t - 1])
                price = row["open"]
                if row["suspended"]:
                    continue
                if side == "sell" and wants[c] < pos.shares and price > down:
                    qty = pos.sell_qty(wants[c])
                    if qty:
                        fee = order_fee(day, c, "sell", qty, qty * price)
                        tax = pos.sell(day, qty)
                        cash += qty * price - fee - tax
                        trades.append((row["date"], c, "sell", qty, price, fee, tax))
                elif side == "buy" and wants[c] > pos.shares and price < up:
                    qty = pos.buy_qty(wants[c], cash, day, price)
                    if qty:
                        fee = order_fee(day, c, "buy", qty, qty * price)
                        cash -= qty * price + fee
                        pos.shares += qty
                        pos.lots.append([day, qty, []])
                        trades.append((row["date"], c, "buy", qty, price, fee, 0.0))
        equity.append(cash + sum(positions[c].shares * rows[c][t]["close"] for c in codes))
    return equity, trades
