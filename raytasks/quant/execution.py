"""The A-share order and position rules as compiled functions, shared by the single-stock
and the portfolio kernels (so both follow one set of rules).

A position is held in real shares. Its FIFO *tax lots* (buy day, shares, dividend income not
yet taxed) exist only for the differential dividend tax (:mod:`raytasks.quant.costs`):

- ``day``: the index of the bar on which the lot was bought;
- ``qty``: shares left in the lot (scaled by each share event, so bonus shares inherit it);
- ``due13`` / ``due15``: taxable dividend income received on the lot under the 2013 and the
  2015 rules, not yet taxed.

``head`` (``state[0]``) is the oldest lot still open and ``state[1]`` the number of lots.
With ``lot_step == 0`` shares are fractional (no lot rounding): only for comparisons with
return-based models.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .costs import DIFF_2013, DIFF_2015, RATE_AT_SALE, WITHHELD

_WITHHELD = np.array(WITHHELD)
_RATES = np.array(RATE_AT_SALE)


@njit(cache=True)
def fee(amount: float, qty: float, comm_rate: float, comm_min: float, stamp: float,
        tr_amount: float, tr_share: float) -> float:
    """Commission (with its minimum per order), stamp duty and transfer fee of one order."""
    return max(comm_min, comm_rate * amount) + stamp * amount + tr_amount * amount \
        + tr_share * qty


@njit(cache=True)
def target_shares(weight: float, value: float, price: float, lot_min: float,
                  lot_step: float) -> float:
    """The position a weight asks for: whole steps, and none below the board's minimum."""
    desired = weight * value / price
    if lot_step <= 0.0:
        return desired
    q = np.floor(desired / lot_step) * lot_step
    return q if q >= lot_min else 0.0


@njit(cache=True)
def buy_qty(target: float, shares: float, cash: float, price: float, lot_min: float,
            lot_step: float, comm_rate: float, comm_min: float, stamp: float,
            tr_amount: float, tr_share: float) -> float:
    """The largest buy towards ``target`` in whole steps that cash covers with fees; 0 if none.

    The same answer as shrinking the order by one step until it is affordable, found in
    O(1): cost(q) = max(a*q + comm_min, b*q) is increasing in q.
    """
    q0 = np.floor((target - shares) / lot_step) * lot_step if lot_step > 0.0 else \
        target - shares
    if q0 <= 0.0 or q0 < lot_min:
        return 0.0
    a = price * (1.0 + stamp + tr_amount) + tr_share
    b = a + comm_rate * price
    cap = min((cash - comm_min) / a, cash / b)
    if lot_step <= 0.0:
        q = min(q0, cap * (1.0 - 1e-12))
        return q if q > 0.0 else 0.0
    q = min(q0, np.floor(cap / lot_step) * lot_step)
    # the closed form is exact in reals; settle float ties with the order's own check
    while q > 0.0 and q * price + fee(q * price, q, comm_rate, comm_min, stamp, tr_amount,
                                      tr_share) > cash + 1e-9:
        q -= lot_step
    while q + lot_step <= q0 and (q + lot_step) * price + fee(
            (q + lot_step) * price, q + lot_step, comm_rate, comm_min, stamp, tr_amount,
            tr_share) <= cash + 1e-9:
        q += lot_step
    return q if q >= lot_min and q > 0.0 else 0.0


@njit(cache=True)
def sell_qty(target: float, shares: float, lot_min: float, lot_step: float) -> float:
    """Shares to sell towards ``target``: all of them (odd lot included) on a full exit,
    otherwise whole steps, and nothing if that is under the board's minimum order."""
    if target <= 0.0:
        return shares
    if lot_step <= 0.0:
        return shares - target
    q = np.floor((shares - target) / lot_step) * lot_step
    return q if q >= lot_min else 0.0


@njit(cache=True)
def add_lot(t: int, qty: float, day: np.ndarray, lqty: np.ndarray, due13: np.ndarray,
            due15: np.ndarray, state: np.ndarray) -> None:
    k = state[1]
    day[k] = t
    lqty[k] = qty
    due13[k] = 0.0
    due15[k] = 0.0
    state[1] = k + 1


@njit(cache=True)
def ex_date(shares: float, ratio: float, cash_div: float, taxable: float, regime: int,
            lot_step: float, lqty: np.ndarray, due13: np.ndarray, due15: np.ndarray,
            state: np.ndarray) -> tuple[float, float, float]:
    """Apply an ex-date to a position held at the record date.

    Returns (shares after, cash credited net of what is withheld, tax withheld). Fractional
    shares from a bonus are dropped (CSDC allots them among all holders by lot).
    """
    if shares <= 0.0:
        return shares, 0.0, 0.0
    income = shares * taxable
    withheld = _WITHHELD[regime] * income
    after = shares * ratio
    if lot_step > 0.0:
        after = np.floor(after + 1e-6)
    newest = -1
    for k in range(state[0], state[1]):
        if lqty[k] <= 0.0:
            continue
        if regime == DIFF_2013:
            due13[k] += lqty[k] * taxable
        elif regime == DIFF_2015:
            due15[k] += lqty[k] * taxable
        lqty[k] *= ratio
        newest = k
    if newest >= 0:  # the dropped fraction comes off the newest lot
        total = 0.0
        for k in range(state[0], state[1]):
            total += lqty[k]
        lqty[newest] -= total - after
    return after, shares * cash_div - withheld, withheld


@njit(cache=True)
def sell_lots(s: int, qty: float, ords: np.ndarray, month: np.ndarray, year: np.ndarray,
              day: np.ndarray, lqty: np.ndarray, due13: np.ndarray, due15: np.ndarray,
              state: np.ndarray) -> float:
    """Take ``qty`` shares off the oldest lots on bar ``s``; returns the dividend tax due."""
    held_to = ords[s] - 1  # the holding period ends the day before the sale
    tax = 0.0
    left = qty
    k = state[0]
    while left > 1e-9 and k < state[1]:
        if lqty[k] <= 1e-9:
            k += 1
            continue
        take = min(left, lqty[k])
        share = take / lqty[k]
        b = day[k]
        band = 0 if held_to <= month[b] else (1 if held_to <= year[b] else 2)
        tax += (_RATES[DIFF_2013, band] - _WITHHELD[DIFF_2013]) * due13[k] * share
        tax += _RATES[DIFF_2015, band] * due15[k] * share
        due13[k] -= due13[k] * share
        due15[k] -= due15[k] * share
        lqty[k] -= take
        left -= take
        if lqty[k] <= 1e-9:
            lqty[k] = 0.0
            k += 1
    state[0] = k
    return tax
