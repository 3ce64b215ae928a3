"""Trading costs in China's A-share market, by date.

- Commission: a broker rate on the traded amount with a minimum per order
  (defaults 0.025 % and 5 CNY; both are parameters).
- Stamp duty (印花税): 0.3 % on both sides from 2007-05-30; 0.1 % on both sides
  from 2008-04-24; sell side only from 2008-09-19; halved to 0.05 % from 2023-08-28.
- Transfer fee (过户费): Shanghai only until 2015-07-31, 0.6 ‰ of par value
  (0.0006 CNY per share); both exchanges 0.002 % of the amount from 2015-08-01;
  0.001 % from 2022-04-29.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

STAMP_DUTY = [  # (from, buy rate, sell rate)
    (date(1900, 1, 1), 0.001, 0.001),
    (date(2007, 5, 30), 0.003, 0.003),
    (date(2008, 4, 24), 0.001, 0.001),
    (date(2008, 9, 19), 0.0, 0.001),
    (date(2023, 8, 28), 0.0, 0.0005),
]


@dataclass(frozen=True)
class CostModel:
    commission_rate: float = 0.00025
    commission_min: float = 5.0

    def commission(self, amount: float) -> float:
        return max(self.commission_min, self.commission_rate * amount) if amount > 0 else 0.0


def stamp_rates(day: date) -> tuple[float, float]:
    """(buy, sell) stamp duty rates in force on ``day``."""
    buy, sell = STAMP_DUTY[0][1:]
    for start, b, s in STAMP_DUTY:
        if day >= start:
            buy, sell = b, s
    return buy, sell


def transfer_fee(day: date, exchange: str, shares: float, amount: float) -> float:
    if day >= date(2022, 4, 29):
        return 0.00001 * amount
    if day >= date(2015, 8, 1):
        return 0.00002 * amount
    return 0.0006 * shares if exchange == "SH" else 0.0


def daily_rates(dates: pd.DatetimeIndex, exchange: str) -> dict[str, np.ndarray]:
    """Per-day arrays for the backtest kernel: stamp buy/sell, transfer by amount/by share."""
    stamp = np.array([stamp_rates(d.date()) for d in dates]).reshape(-1, 2)
    by_amount = np.array([0.00001 if d.date() >= date(2022, 4, 29) else
                          0.00002 if d.date() >= date(2015, 8, 1) else 0.0 for d in dates])
    by_share = np.array([0.0006 if (exchange == "SH" and d.date() < date(2015, 8, 1)) else 0.0
                         for d in dates])
    return {"stamp_buy": stamp[:, 0], "stamp_sell": stamp[:, 1],
            "transfer_amount": by_amount, "transfer_share": by_share}
