"""The A-share backtest engine: target weights in, equity curve, trades and fees out.

Fill rules (stated, not implied):

- A signal is the target weight in [0, 1] computed from data up to the close of
  day t. It is traded at the **open of day t+1** (no look-ahead).
- The order size is ``floor(weight * equity_at_open / open / 100) * 100`` shares
  (100-share board lots); a buy shrinks by lots until cash covers price and fees.
- **T+1**: shares bought on a day cannot be sold that day.
- Selling everything sells any odd lot whole; partial sells are in lots.
- **Price limits**: no buy when the open is at or above limit-up, no sell when at
  or below limit-down (limits from the previous close and the board/ST/date rule).
- **Suspended** days trade nothing; the target is tried again the next day.
- Costs: commission with a minimum per order, stamp duty and transfer fee at the
  rates in force on the trade date (:mod:`raytasks.quant.costs`).
- Equity is marked at each day's close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from .costs import CostModel, daily_rates
from .market import LOT, limit_pct_series, limit_prices


@dataclass
class Market:
    """One stock's bars as arrays the kernel reads."""

    code: str
    dates: pd.DatetimeIndex
    open: np.ndarray
    close: np.ndarray
    limit_up: np.ndarray
    limit_down: np.ndarray
    suspended: np.ndarray
    rates: dict[str, np.ndarray]

    @classmethod
    def from_bars(cls, bars: pd.DataFrame) -> Market:
        bars = bars.sort_values("date").reset_index(drop=True)
        code = str(bars["code"].iloc[0])
        dates = pd.DatetimeIndex(bars["date"])
        close = bars["close"].to_numpy(float)
        prev = np.concatenate([[close[0]], close[:-1]])
        pct = limit_pct_series(code, dates, bars["is_st"].to_numpy(bool))
        up, down = limit_prices(prev, pct)
        return cls(code, dates, bars["open"].to_numpy(float), close, up, down,
                   bars["suspended"].to_numpy(bool), daily_rates(dates, code[-2:]))


@njit(cache=True)
def _kernel(open_: np.ndarray, close: np.ndarray, up: np.ndarray, down: np.ndarray,
            suspended: np.ndarray, target: np.ndarray, cash0: float, comm_rate: float,
            comm_min: float, stamp_buy: np.ndarray, stamp_sell: np.ndarray,
            tr_amount: np.ndarray, tr_share: np.ndarray, lot: int, shares0: float,
            trades: np.ndarray) -> tuple[np.ndarray, int]:
    n = len(close)
    equity = np.empty(n)
    cash = cash0
    shares = shares0
    ntrades = 0
    equity[0] = cash + shares * close[0]
    for t in range(1, n):
        w = target[t - 1]
        if not suspended[t] and w == w:  # NaN target: hold
            price = open_[t]
            value = cash + shares * price
            want = np.floor(w * value / price / lot) * lot
            if want > shares and price < up[t]:
                qty = want - shares
                while qty > 0:
                    amount = qty * price
                    fee = max(comm_min, comm_rate * amount) + stamp_buy[t] * amount \
                        + tr_amount[t] * amount + tr_share[t] * qty
                    if amount + fee <= cash + 1e-9:
                        cash -= amount + fee
                        shares += qty
                        trades[ntrades, 0] = t
                        trades[ntrades, 1] = 1.0
                        trades[ntrades, 2] = qty
                        trades[ntrades, 3] = price
                        trades[ntrades, 4] = fee
                        ntrades += 1
                        break
                    qty -= lot
            elif want < shares and price > down[t]:
                # everything held was bought before today (buys happen only when
                # want > shares), so T+1 leaves all of it sellable here
                qty = shares - want if want > 0 else shares
                if want > 0:
                    qty = np.floor(qty / lot) * lot
                if qty > 0:
                    amount = qty * price
                    fee = max(comm_min, comm_rate * amount) + stamp_sell[t] * amount \
                        + tr_amount[t] * amount + tr_share[t] * qty
                    cash += amount - fee
                    shares -= qty
                    trades[ntrades, 0] = t
                    trades[ntrades, 1] = -1.0
                    trades[ntrades, 2] = qty
                    trades[ntrades, 3] = price
                    trades[ntrades, 4] = fee
                    ntrades += 1
        equity[t] = cash + shares * close[t]
    return equity, ntrades


@dataclass
class BacktestResult:
    dates: pd.DatetimeIndex
    equity: np.ndarray
    trades: pd.DataFrame

    @property
    def total_return(self) -> float:
        return float(self.equity[-1] / self.equity[0] - 1.0)

    @property
    def fees(self) -> float:
        return float(self.trades["fee"].sum()) if len(self.trades) else 0.0

    def to_dict(self, max_points: int = 600) -> dict[str, Any]:
        step = max(1, len(self.equity) // max_points)
        return {
            "total_return": self.total_return,
            "fees": self.fees,
            "trades": len(self.trades),
            "equity_curve": [round(float(x), 2) for x in self.equity[::step]],
            "equity_dates": [d.strftime("%Y-%m-%d") for d in self.dates[::step]],
            "trade_log": self.trades.head(500).assign(
                date=lambda f: f["date"].dt.strftime("%Y-%m-%d")).to_dict("records"),
        }


def _simulate(market: Market, target: np.ndarray, cash: float, costs: CostModel,
              shares: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    target = np.asarray(target, dtype=float)
    if target.shape != market.close.shape:
        raise ValueError(f"target has {target.shape[0]} values for {len(market.close)} bars")
    trades = np.zeros((len(target), 5))
    r = market.rates
    equity, n = _kernel(market.open, market.close, market.limit_up, market.limit_down,
                        market.suspended, target, float(cash), costs.commission_rate,
                        costs.commission_min, r["stamp_buy"], r["stamp_sell"],
                        r["transfer_amount"], r["transfer_share"], LOT, float(shares), trades)
    return equity, trades[:n]


def run(market: Market, target: np.ndarray, cash: float = 1_000_000.0,
        costs: CostModel | None = None, shares: float = 0.0) -> BacktestResult:
    """Backtest one stock against a target-weight series aligned with its bars.

    ``shares`` is a starting position (it may hold an odd lot, e.g. from a bonus issue).
    """
    equity, trades = _simulate(market, target, cash, costs or CostModel(), shares)
    log = pd.DataFrame(trades, columns=["t", "side", "qty", "price", "fee"])
    log["date"] = market.dates[log["t"].astype(int)]
    log["side"] = np.where(log["side"] > 0, "buy", "sell")
    return BacktestResult(market.dates, equity, log[["date", "side", "qty", "price", "fee"]])


# --- strategies: target weights from data up to each close --------------------


def sma(values: np.ndarray, window: int) -> np.ndarray:
    c = np.cumsum(np.insert(np.asarray(values, float), 0, 0.0))
    out = np.full(len(values), np.nan)
    out[window - 1:] = (c[window:] - c[:-window]) / window
    return out


def sma_crossover(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """Fully invested while the fast SMA is above the slow one."""
    if not 0 < fast < slow:
        raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")
    f, s = sma(close, fast), sma(close, slow)
    return np.where(np.isnan(s), 0.0, (f > s).astype(float))


def momentum(close: np.ndarray, lookback: int) -> np.ndarray:
    """Invested while the return over ``lookback`` days is positive."""
    out = np.zeros(len(close))
    out[lookback:] = (close[lookback:] > close[:-lookback]).astype(float)
    return out


def mean_reversion(close: np.ndarray, window: int, entry_z: float = 1.0) -> np.ndarray:
    """Buy when the close is ``entry_z`` deviations under its mean; exit at the mean."""
    mean = sma(close, window)
    sd = pd.Series(close).rolling(window).std(ddof=0).to_numpy()
    z = (close - mean) / np.where(sd > 0, sd, np.nan)
    out = np.zeros(len(close))
    holding = 0.0
    for t in range(len(close)):
        if np.isnan(z[t]):
            continue
        if holding == 0.0 and z[t] < -entry_z:
            holding = 1.0
        elif holding == 1.0 and z[t] >= 0.0:
            holding = 0.0
        out[t] = holding
    return out


def sweep_sma(market: Market, pairs: list[tuple[int, int]], cash: float = 1_000_000.0,
              costs: CostModel | None = None) -> pd.DataFrame:
    """Backtest SMA crossovers for every (fast, slow) pair: return, fees, trades, Sharpe."""
    costs = costs or CostModel()
    averages = {w: sma(market.close, w) for pair in pairs for w in pair}
    rows = []
    for fast, slow in pairs:
        if not 0 < fast < slow:
            raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")
        f, s = averages[fast], averages[slow]
        target = np.where(np.isnan(s), 0.0, (f > s).astype(float))
        equity, trades = _simulate(market, target, cash, costs)
        daily = np.diff(equity) / equity[:-1]
        sd = daily.std()
        rows.append((fast, slow, equity[-1] / equity[0] - 1.0, trades[:, 4].sum(),
                     len(trades), daily.mean() / sd * np.sqrt(252) if sd > 0 else 0.0))
    return pd.DataFrame(rows, columns=["fast", "slow", "total_return", "fees", "trades",
                                       "sharpe"])


def grid(fasts: list[int], slows: list[int]) -> list[tuple[int, int]]:
    return [(f, s) for f in fasts for s in slows if f < s]
