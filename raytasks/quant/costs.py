"""Trading costs in China's A-share market, by date.

- Commission: a broker rate on the traded amount with a minimum per order
  (defaults 0.025 % and 5 CNY; both are parameters).
- Stamp duty (印花税): 0.3 % on both sides from 2007-05-30; 0.1 % on both sides
  from 2008-04-24; sell side only from 2008-09-19; halved to 0.05 % from 2023-08-28.
- Transfer fee (过户费): Shanghai only until 2015-07-31, 0.6 ‰ of par value
  (0.0006 CNY per share); both exchanges 0.002 % of the amount from 2015-08-01;
  0.001 % from 2022-04-29.
- Dividend tax (股息红利个人所得税) of an individual investor or a securities investment
  fund, by the record date of the dividend (see :func:`dividend_regimes`). The taxable
  income is the cash dividend plus 1 CNY par value per bonus share (送股); shares from the
  capital reserve (转增) are untaxed.

  - before 2013-01-01 (财税[2005]102号): 10 % withheld when paid;
  - 2013-01-01 to 2015-09-07 (财税[2012]85号): 5 % withheld when paid; at the sale of the
    shares, topped up to 20 % if they were held up to one month, 10 % up to one year;
  - from 2015-09-08 (财税[2015]101号): nothing withheld when paid; at the sale, 20 % if held
    up to one month, 10 % up to one year, exempt beyond.

  The holding period runs from the buy date to the day before the sale, first in first out;
  bonus shares inherit it. A dividend is credited gross on its ex-date, and the deferred tax
  is charged from the cash account when the shares it was paid on are sold.
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


#: dividend tax regimes (by record date): what is withheld when paid, and the rates at sale
#: for holdings of up to one month, up to one year, and longer
PRE_2013, DIFF_2013, DIFF_2015, EXEMPT = 0, 1, 2, 3
WITHHELD = (0.10, 0.05, 0.0, 0.0)
RATE_AT_SALE = ((0.0, 0.0, 0.0), (0.20, 0.10, 0.05), (0.20, 0.10, 0.0), (0.0, 0.0, 0.0))


@dataclass(frozen=True)
class CostModel:
    """Broker commission and whether dividends are taxed (individual investor rules)."""

    commission_rate: float = 0.00025
    commission_min: float = 5.0
    dividend_tax: bool = True

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


def dividend_regimes(record_dates: pd.DatetimeIndex, taxed: bool = True) -> np.ndarray:
    """The dividend tax regime of dividends whose record date is each of ``record_dates``."""
    days = np.asarray(record_dates.values.astype("datetime64[D]"))
    out = np.where(days < np.datetime64("2013-01-01"), PRE_2013,
                   np.where(days < np.datetime64("2015-09-08"), DIFF_2013, DIFF_2015))
    return np.full(len(days), EXEMPT) if not taxed else out.astype(np.int64)


def holding_thresholds(dates: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day numbers of each date, of one calendar month after it and of one year after it."""
    def days(index: pd.DatetimeIndex) -> np.ndarray:
        return np.asarray(index.values.astype("datetime64[D]").astype(np.int64))

    return (days(dates), days(dates + pd.DateOffset(months=1)),
            days(dates + pd.DateOffset(years=1)))
