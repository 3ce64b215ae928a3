"""The A-share backtest engine: target weights in, equity curve, trades and fees out.

Fill rules (stated, not implied):

- A signal is the target weight in [0, 1] computed from data up to the close of
  day t. It is traded at the **open of day t+1** (no look-ahead).
- The target position is ``weight * equity_at_open / open`` shares, rounded down to the
  board's lot rule (:func:`raytasks.quant.market.lot_rule`): whole lots of 100 on the main
  board and ChiNext; on STAR at least 200 shares, then steps of 1. A buy is in whole steps
  and shrinks by steps until cash covers price and fees.
- **T+1**: shares bought on a day cannot be sold that day.
- An odd lot (from a bonus issue or a starting position) is only sold whole, with a full
  exit; partial sells are in whole steps, and on STAR at least 200 shares.
- **Corporate actions**: positions are real shares and cash. Before the open of an ex-date
  the shares held are converted (``shares * (1 + bonus + transfer)``, fractions dropped)
  and the cash dividend is credited, with the dividend tax of :mod:`raytasks.quant.costs`.
  Equity is therefore continuous across ex-dates.
- **Price limits** come from the previous close, or the exchange's ex-rights reference
  price on an ex-date, and the board/ST/date rule: no buy when the open is at or above
  limit-up, no sell when at or below limit-down.
- **Suspended** days trade nothing; the target is tried again the next day.
- Costs: commission with a minimum per order, stamp duty and transfer fee at the
  rates in force on the trade date.
- Equity is marked at each day's close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from . import execution as ex
from . import risk
from .corporate import event_arrays, reference_prices
from .costs import EXEMPT, CostModel, daily_rates, dividend_regimes, holding_thresholds
from .market import limit_pct_series, limit_prices, lot_rule
from .signals import mean_reversion, momentum, rolling_mean, sma_crossover, sma_signal

__all__ = ["BacktestResult", "Market", "grid", "mean_reversion", "momentum", "run",
           "sma_crossover", "sweep_sma"]


@dataclass
class Market:
    """One stock's bars as arrays the kernel reads (prices as traded, events by day)."""

    code: str
    dates: pd.DatetimeIndex
    open: np.ndarray
    close: np.ndarray
    limit_up: np.ndarray
    limit_down: np.ndarray
    suspended: np.ndarray
    rates: dict[str, np.ndarray]
    ratio: np.ndarray       # shares per share held after the day's ex-date (1.0 otherwise)
    cash_div: np.ndarray    # cash dividend per share before tax
    taxable: np.ndarray     # taxable dividend income per share (cash + par of bonus shares)
    regime: np.ndarray      # the dividend tax regime of the day's dividend
    days: np.ndarray        # day numbers, and one month / one year after (holding periods)
    month: np.ndarray
    year: np.ndarray
    factor: np.ndarray      # the adjustment factor: adjusted price = price * factor
    lot_min: float
    lot_step: float

    @classmethod
    def from_bars(cls, bars: pd.DataFrame) -> Market:
        bars = bars.sort_values("date").reset_index(drop=True)
        code = str(bars["code"].iloc[0])
        dates = pd.DatetimeIndex(bars["date"])
        close = bars["close"].to_numpy(float)
        cash, bonus, transfer = event_arrays(bars)
        pct = limit_pct_series(code, dates, bars["is_st"].to_numpy(bool))
        up, down = limit_prices(reference_prices(close, cash, bonus, transfer), pct)
        record = pd.DatetimeIndex(np.concatenate([dates.values[:1], dates.values[:-1]]))
        days, month, year = holding_thresholds(dates)
        factor = bars["adj_factor"].ffill().fillna(1.0).to_numpy(float) \
            if "adj_factor" in bars else np.ones(len(bars))
        lot_min, lot_step = lot_rule(code)
        return cls(code, dates, bars["open"].to_numpy(float), close, up, down,
                   bars["suspended"].to_numpy(bool), daily_rates(dates, code[-2:]),
                   1.0 + bonus + transfer, cash, cash + bonus * 1.0,
                   dividend_regimes(record), days, month, year, factor, lot_min, lot_step)

    @property
    def adjusted_close(self) -> np.ndarray:
        """The close times the adjustment factor: what signals and features read."""
        return np.asarray(self.close * self.factor)


@njit(cache=True)
def _kernel(open_: np.ndarray, close: np.ndarray, up: np.ndarray, down: np.ndarray,
            suspended: np.ndarray, ratio: np.ndarray, cash_div: np.ndarray,
            taxable: np.ndarray, regime: np.ndarray, days: np.ndarray, month: np.ndarray,
            year: np.ndarray, target: np.ndarray, cash0: float, shares0: float,
            comm_rate: float, comm_min: float, stamp_buy: np.ndarray, stamp_sell: np.ndarray,
            tr_amount: np.ndarray, tr_share: np.ndarray, lot_min: float, lot_step: float,
            trades: np.ndarray, totals: np.ndarray) -> tuple[np.ndarray, int]:
    n = len(close)
    equity = np.empty(n)
    cash = cash0
    shares = shares0
    ntrades = 0
    lot_day = np.zeros(n + 1, np.int64)
    lot_qty = np.zeros(n + 1)
    due13 = np.zeros(n + 1)
    due15 = np.zeros(n + 1)
    state = np.zeros(2, np.int64)
    if shares0 > 0:  # a starting position counts as bought on the first day
        ex.add_lot(0, shares0, lot_day, lot_qty, due13, due15, state)
    equity[0] = cash + shares * close[0]
    for t in range(1, n):
        if ratio[t] != 1.0 or cash_div[t] != 0.0:
            shares, credit, withheld = ex.ex_date(shares, ratio[t], cash_div[t], taxable[t],
                                                  regime[t], lot_step, lot_qty, due13, due15,
                                                  state)
            cash += credit
            totals[0] += credit + withheld
            totals[1] += withheld
        w = target[t - 1]
        if not suspended[t] and w == w:  # NaN target: hold
            price = open_[t]
            want = ex.target_shares(w, cash + shares * price, price, lot_min, lot_step)
            qty = 0.0
            side = 0.0
            tax = 0.0
            fee = 0.0
            if want > shares and price < up[t]:
                qty = ex.buy_qty(want, shares, cash, price, lot_min, lot_step, comm_rate,
                                 comm_min, stamp_buy[t], tr_amount[t], tr_share[t])
                if qty > 0.0:
                    side = 1.0
                    fee = ex.fee(qty * price, qty, comm_rate, comm_min, stamp_buy[t],
                                 tr_amount[t], tr_share[t])
                    cash -= qty * price + fee
                    shares += qty
                    ex.add_lot(t, qty, lot_day, lot_qty, due13, due15, state)
            elif want < shares and price > down[t]:
                # everything held was bought before today (buys happen only when
                # want > shares), so T+1 leaves all of it sellable here
                qty = ex.sell_qty(want, shares, lot_min, lot_step)
                if qty > 0.0:
                    side = -1.0
                    fee = ex.fee(qty * price, qty, comm_rate, comm_min, stamp_sell[t],
                                 tr_amount[t], tr_share[t])
                    tax = ex.sell_lots(t, qty, days, month, year, lot_day, lot_qty, due13,
                                       due15, state)
                    cash += qty * price - fee - tax
                    shares -= qty
                    totals[2] += tax
            if side != 0.0:
                trades[ntrades, 0] = t
                trades[ntrades, 1] = side
                trades[ntrades, 2] = qty
                trades[ntrades, 3] = price
                trades[ntrades, 4] = fee
                trades[ntrades, 5] = tax
                ntrades += 1
        equity[t] = cash + shares * close[t]
    return equity, ntrades


@dataclass
class BacktestResult:
    dates: pd.DatetimeIndex
    equity: np.ndarray
    trades: pd.DataFrame
    dividends: float = 0.0      # cash dividends received, before tax
    dividend_tax: float = 0.0   # withheld when paid plus charged at sales

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
            "dividends": self.dividends,
            "dividend_tax": self.dividend_tax,
            "trades": len(self.trades),
            "equity_curve": [round(float(x), 2) for x in self.equity[::step]],
            "equity_dates": [d.strftime("%Y-%m-%d") for d in self.dates[::step]],
            "trade_log": self.trades.head(500).assign(
                date=lambda f: f["date"].dt.strftime("%Y-%m-%d")).to_dict("records"),
        }


def kernel_args(market: Market, target: np.ndarray, cash: float, costs: CostModel,
                shares: float = 0.0) -> tuple[Any, ...]:
    """The kernel's arguments; its trade log and totals are the last two (written in)."""
    target = np.asarray(target, dtype=float)
    if target.shape != market.close.shape:
        raise ValueError(f"target has {target.shape[0]} values for {len(market.close)} bars")
    r = market.rates
    regime = market.regime if costs.dividend_tax else np.full(len(target), EXEMPT)
    return (market.open, market.close, market.limit_up, market.limit_down, market.suspended,
            market.ratio, market.cash_div, market.taxable, regime, market.days, market.month,
            market.year, target, float(cash), float(shares), costs.commission_rate,
            costs.commission_min, r["stamp_buy"], r["stamp_sell"], r["transfer_amount"],
            r["transfer_share"], market.lot_min, market.lot_step, np.zeros((len(target), 6)),
            np.zeros(3))


def _simulate(market: Market, target: np.ndarray, cash: float, costs: CostModel,
              shares: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    args = kernel_args(market, target, cash, costs, shares)
    equity, n = _kernel(*args)
    return equity, args[-2][:n], args[-1]


def run(market: Market, target: np.ndarray, cash: float = 1_000_000.0,
        costs: CostModel | None = None, shares: float = 0.0) -> BacktestResult:
    """Backtest one stock against a target-weight series aligned with its bars.

    ``shares`` is a starting position, counted as bought on the first day (it may hold an
    odd lot).
    """
    equity, trades, totals = _simulate(market, target, cash, costs or CostModel(), shares)
    log = pd.DataFrame(trades, columns=["t", "side", "qty", "price", "fee", "tax"])
    log["date"] = market.dates[log["t"].astype(int)]
    log["side"] = np.where(log["side"] > 0, "buy", "sell")
    return BacktestResult(market.dates, equity,
                          log[["date", "side", "qty", "price", "fee", "tax"]],
                          float(totals[0]), float(totals[1] + totals[2]))


def sweep_sma(market: Market, pairs: list[tuple[int, int]], cash: float = 1_000_000.0,
              costs: CostModel | None = None) -> pd.DataFrame:
    """Backtest SMA crossovers (on the adjusted close) for every (fast, slow) pair:
    return, fees, trades, and the Sharpe ratio of :func:`raytasks.quant.risk.sharpe`."""
    costs = costs or CostModel()
    adj = market.adjusted_close
    averages = {w: rolling_mean(adj, w) for w in {w for pair in pairs for w in pair}}
    rows = []
    for fast, slow in pairs:
        if not 0 < fast < slow:
            raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")
        target = sma_signal(averages[fast], averages[slow])
        equity, trades, _ = _simulate(market, target, cash, costs)
        rows.append((fast, slow, equity[-1] / equity[0] - 1.0, trades[:, 4].sum(),
                     len(trades), risk.sharpe(risk.returns(equity))))
    return pd.DataFrame(rows, columns=["fast", "slow", "total_return", "fees", "trades",
                                       "sharpe"])


def grid(fasts: list[int], slows: list[int]) -> list[tuple[int, int]]:
    return [(f, s) for f in fasts for s in slows if f < s]
