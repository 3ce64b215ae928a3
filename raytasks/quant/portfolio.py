"""Multi-stock backtests: top-k selection, periodic rebalancing, the single-stock rules.

Each stock trades under the rules of :mod:`raytasks.quant.backtest` (next-open fills,
T+1, board lots with odd lots sold whole, no fill at the price limits, none while
suspended, costs by date). On a trading day all sells go first, then buys, sharing
one cash account; buys shrink by lots until the cash covers them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .backtest import Market
from .costs import CostModel
from .market import LOT


def align(markets: dict[str, Market]) -> tuple[pd.DatetimeIndex, dict[str, dict[str, Any]]]:
    """Put every stock on the union of their dates (missing days count as suspended)."""
    dates = pd.DatetimeIndex(sorted(set().union(*[set(m.dates) for m in markets.values()])))
    out = {}
    for code, m in markets.items():
        frame = pd.DataFrame({"open": m.open, "close": m.close, "up": m.limit_up,
                              "down": m.limit_down, "suspended": m.suspended,
                              **m.rates}, index=m.dates).reindex(dates)
        missing = frame["close"].isna()
        frame["close"] = frame["close"].ffill()
        frame["suspended"] = frame["suspended"].fillna(True).astype(bool) | missing
        frame = frame.ffill().bfill()
        out[code] = {k: frame[k].to_numpy() for k in frame.columns}
    return dates, out


def run_portfolio(markets: dict[str, Market], weights: pd.DataFrame,
                  cash: float = 1_000_000.0,
                  costs: CostModel | None = None) -> dict[str, Any]:
    """Backtest target weights (rows: dates, columns: codes; decided at each close)."""
    costs = costs or CostModel()
    dates, data = align(markets)
    codes = list(markets)
    w = weights.reindex(index=dates, columns=codes).ffill().fillna(0.0).to_numpy()
    shares = dict.fromkeys(codes, 0.0)
    equity = np.empty(len(dates))
    equity[0] = cash
    trades: list[dict[str, Any]] = []
    traded = 0.0
    for t in range(1, len(dates)):
        value = cash + sum(shares[c] * data[c]["open"][t] for c in codes)
        wants = {c: np.floor(w[t - 1, i] * value / data[c]["open"][t] / LOT) * LOT
                 for i, c in enumerate(codes)}
        for side in ("sell", "buy"):
            for c in codes:
                d = data[c]
                price = d["open"][t]
                if d["suspended"][t]:
                    continue
                if side == "sell" and wants[c] < shares[c] and price > d["down"][t]:
                    qty = shares[c] if wants[c] == 0 else \
                        np.floor((shares[c] - wants[c]) / LOT) * LOT
                    if qty <= 0:
                        continue
                    amount = qty * price
                    fee = costs.commission(amount) + (d["stamp_sell"][t]
                                                      + d["transfer_amount"][t]) * amount \
                        + d["transfer_share"][t] * qty
                    cash += amount - fee
                    shares[c] -= qty
                elif side == "buy" and wants[c] > shares[c] and price < d["up"][t]:
                    qty = wants[c] - shares[c]
                    while qty > 0:
                        amount = qty * price
                        fee = costs.commission(amount) + (d["stamp_buy"][t]
                                                          + d["transfer_amount"][t]) * amount \
                            + d["transfer_share"][t] * qty
                        if amount + fee <= cash + 1e-9:
                            cash -= amount + fee
                            shares[c] += qty
                            break
                        qty -= LOT
                    if qty <= 0:
                        continue
                else:
                    continue
                traded += amount
                trades.append({"date": dates[t].strftime("%Y-%m-%d"), "code": c, "side": side,
                               "qty": float(qty), "price": float(price), "fee": float(fee)})
        equity[t] = cash + sum(shares[c] * data[c]["close"][t] for c in codes)
    return {"dates": dates, "equity": equity, "trades": trades, "traded": traded,
            "final_positions": {c: q for c, q in shares.items() if q}}


def top_k_weights(scores: pd.DataFrame, k: int, every: int,
                  suspended: pd.DataFrame | None = None) -> pd.DataFrame:
    """Equal weights on the ``k`` best scores, re-chosen every ``every`` dates (held between)."""
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
