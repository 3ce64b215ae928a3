"""Multi-stock backtests: top-k selection, periodic rebalancing, the single-stock rules.

Each stock trades under the rules of :mod:`raytasks.quant.backtest` (next-open fills, T+1,
the board's lot rule with odd lots sold whole, no fill at the price limits, none while
suspended, costs by date, corporate actions with the dividend tax), through the same
compiled functions (:mod:`raytasks.quant.execution`). On a trading day ex-dates apply
first, then all sells, then buys, sharing one cash account.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from . import execution as ex
from .backtest import Market
from .costs import EXEMPT, CostModel, holding_thresholds

_FIELDS = ("open", "close", "up", "down", "suspended", "ratio", "cash_div", "taxable",
           "regime", "stamp_buy", "stamp_sell", "transfer_amount", "transfer_share")


def align(markets: dict[str, Market]) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray]]:
    """Every stock on the union of their dates, as code × date arrays (a missing day is
    suspended, at the last close, with no event)."""
    dates = pd.DatetimeIndex(sorted(set().union(*[set(m.dates) for m in markets.values()])))
    frames = []
    for m in markets.values():
        frame = pd.DataFrame({"open": m.open, "close": m.close, "up": m.limit_up,
                              "down": m.limit_down, "suspended": m.suspended,
                              "ratio": m.ratio, "cash_div": m.cash_div, "taxable": m.taxable,
                              "regime": m.regime, **m.rates}, index=m.dates).reindex(dates)
        missing = frame["close"].isna()
        frame = frame.fillna({"ratio": 1.0, "cash_div": 0.0, "taxable": 0.0})
        frame["suspended"] = frame["suspended"].fillna(True).astype(bool) | missing
        frames.append(frame.ffill().bfill())
    return dates, {k: np.stack([f[k].to_numpy(float) for f in frames]) for k in _FIELDS}


@njit(cache=True)
def _kernel(d_open: np.ndarray, d_close: np.ndarray, up: np.ndarray, down: np.ndarray,
            suspended: np.ndarray, ratio: np.ndarray, cash_div: np.ndarray,
            taxable: np.ndarray, regime: np.ndarray, stamp_buy: np.ndarray,
            stamp_sell: np.ndarray, tr_amount: np.ndarray, tr_share: np.ndarray,
            days: np.ndarray, month: np.ndarray, year: np.ndarray, w: np.ndarray,
            cash0: float, comm_rate: float, comm_min: float, lot_min: np.ndarray,
            lot_step: np.ndarray, trades: np.ndarray,
            totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    m, n = d_close.shape
    equity = np.empty(n)
    cash = cash0
    shares = np.zeros(m)
    want = np.zeros(m)
    lot_day = np.zeros((m, n + 1), np.int64)
    lot_qty = np.zeros((m, n + 1))
    due13 = np.zeros((m, n + 1))
    due15 = np.zeros((m, n + 1))
    state = np.zeros((m, 2), np.int64)
    count = 0
    equity[0] = cash
    for t in range(1, n):
        for c in range(m):
            if ratio[c, t] != 1.0 or cash_div[c, t] != 0.0:
                shares[c], credit, withheld = ex.ex_date(
                    shares[c], ratio[c, t], cash_div[c, t], taxable[c, t], int(regime[c, t]),
                    lot_step[c], lot_qty[c], due13[c], due15[c], state[c])
                cash += credit
                totals[0] += credit + withheld
                totals[1] += withheld
        value = cash
        for c in range(m):
            value += shares[c] * d_open[c, t]
        for c in range(m):
            want[c] = ex.target_shares(w[t - 1, c], value, d_open[c, t], lot_min[c],
                                       lot_step[c])
        for side in (-1.0, 1.0):
            for c in range(m):
                price = d_open[c, t]
                if suspended[c, t] > 0.0:
                    continue
                qty, fee, tax = 0.0, 0.0, 0.0
                if side < 0 and want[c] < shares[c] and price > down[c, t]:
                    qty = ex.sell_qty(want[c], shares[c], lot_min[c], lot_step[c])
                    if qty > 0.0:
                        fee = ex.fee(qty * price, qty, comm_rate, comm_min, stamp_sell[c, t],
                                     tr_amount[c, t], tr_share[c, t])
                        tax = ex.sell_lots(t, qty, days, month, year, lot_day[c], lot_qty[c],
                                           due13[c], due15[c], state[c])
                        cash += qty * price - fee - tax
                        shares[c] -= qty
                        totals[2] += tax
                elif side > 0 and want[c] > shares[c] and price < up[c, t]:
                    qty = ex.buy_qty(want[c], shares[c], cash, price, lot_min[c], lot_step[c],
                                     comm_rate, comm_min, stamp_buy[c, t], tr_amount[c, t],
                                     tr_share[c, t])
                    if qty > 0.0:
                        fee = ex.fee(qty * price, qty, comm_rate, comm_min, stamp_buy[c, t],
                                     tr_amount[c, t], tr_share[c, t])
                        cash -= qty * price + fee
                        shares[c] += qty
                        ex.add_lot(t, qty, lot_day[c], lot_qty[c], due13[c], due15[c],
                                   state[c])
                if qty > 0.0:
                    totals[3] += qty * price
                    if count < len(trades):
                        row = trades[count]
                        row[0], row[1], row[2], row[3] = t, c, side, qty
                        row[4], row[5], row[6] = price, fee, tax
                    count += 1
        equity[t] = cash
        for c in range(m):
            equity[t] += shares[c] * d_close[c, t]
    return equity, shares, count


def run_portfolio(markets: dict[str, Market], weights: pd.DataFrame,
                  cash: float = 1_000_000.0,
                  costs: CostModel | None = None) -> dict[str, Any]:
    """Backtest target weights (rows: dates, columns: codes; decided at each close)."""
    costs = costs or CostModel()
    dates, d = align(markets)
    codes = list(markets)
    w = weights.reindex(index=dates, columns=codes).ffill().fillna(0.0).to_numpy(float)
    days, month, year = holding_thresholds(dates)
    regime = d["regime"] if costs.dividend_tax else np.full_like(d["regime"], EXEMPT)
    lot_min = np.array([markets[c].lot_min for c in codes])
    lot_step = np.array([markets[c].lot_step for c in codes])
    capacity = 4 * len(dates) + 1000
    while True:
        trades, totals = np.zeros((capacity, 7)), np.zeros(4)
        equity, final, count = _kernel(
            d["open"], d["close"], d["up"], d["down"], d["suspended"], d["ratio"],
            d["cash_div"], d["taxable"], regime, d["stamp_buy"], d["stamp_sell"],
            d["transfer_amount"], d["transfer_share"], days, month, year, w, float(cash),
            costs.commission_rate, costs.commission_min, lot_min, lot_step, trades, totals)
        if count <= capacity:
            break
        capacity = count  # rare: run again with room for every trade
    log = [{"date": dates[int(r[0])].strftime("%Y-%m-%d"), "code": codes[int(r[1])],
            "side": "buy" if r[2] > 0 else "sell", "qty": float(r[3]), "price": float(r[4]),
            "fee": float(r[5]), "tax": float(r[6])} for r in trades[:count]]
    return {"dates": dates, "equity": equity, "trades": log, "traded": float(totals[3]),
            "dividends": float(totals[0]), "dividend_tax": float(totals[1] + totals[2]),
            "final_positions": {c: float(q) for c, q in zip(codes, final, strict=True) if q}}


def top_k_weights(scores: pd.DataFrame, k: int, every: int,
                  suspended: pd.DataFrame | None = None) -> pd.DataFrame:
    """Equal weights on the ``k`` best scores, re-chosen every ``every`` dates (held between);
    equal scores are ranked by column order."""
    weights = pd.DataFrame(np.nan, index=scores.index, columns=scores.columns)
    for i in range(0, len(scores), every):
        row = scores.iloc[i]
        if suspended is not None:
            row = row[~suspended.iloc[i].reindex(row.index).fillna(False).astype(bool)]
        best = row.dropna().nlargest(k).index
        weights.iloc[i] = 0.0
        if len(best):
            weights.loc[scores.index[i], best] = 1.0 / k
    return weights.ffill().fillna(0.0)
