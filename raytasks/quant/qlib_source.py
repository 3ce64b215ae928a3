"""Qlib's day data (``~/.qlib/qlib_data/cn_data`` and the like) as a source of bars.

The layout is the one Qlib's ``scripts/dump_bin.py`` writes and its file storage reads:

- ``calendars/day.txt``: one session a line, ``YYYY-MM-DD``, ascending;
- ``instruments/all.txt``: ``SYMBOL<TAB>start<TAB>end`` a line (``SH600000``); a symbol may
  have several lines (several listed ranges);
- ``features/<symbol lowercased>/<field>.day.bin``: float32 little-endian; the first value is
  the index in the calendar of the stock's first session, then one value per session from
  there (NaN on a session without data).

Qlib stores prices and volume *adjusted* (its docs: ``factor = adjusted_price /
original_price``; its collector writes ``price * factor`` and ``volume / factor``; its
cn_data also divides both price and factor by the first close, which cancels). This module
undoes that and returns the normalised schema of :data:`~.market.BAR_COLUMNS` that the
``csv`` and ``synthetic`` sources return: prices as traded (``$open / $factor`` ...),
``volume`` in shares (``$volume * $factor``), ``amount`` in CNY, ``adj_factor`` = ``$factor``
(a cumulative factor: only its ratios matter, which Qlib's rescaling leaves equal).

- ``amount`` is the field ``amount`` (or ``money``, as some Qlib data name it), which no
  adjustment changes; else ``$vwap * $volume`` (both adjusted: the product is in CNY); else NaN.
- Prices are rounded to the tick (0.01 CNY; 0.001 for B shares) and volume to whole shares,
  which removes float32's rounding (about 1e-7 relative); ``amount`` keeps it.
- A session inside the stock's listed range where ``$close`` or ``$volume`` is NaN, or
  ``$volume`` is 0, is suspended (Qlib's convention sets the bar NaN): the bar is flat at
  its stored close if any, else at the last close's ex-rights reference price (last
  adjusted close / that day's factor), with volume and amount 0. Sessions before the first
  close are not bars.
- A missing ``factor`` field means prices are unadjusted (factor 1, as Qlib's exchange assumes).
- Qlib has no ST flags nor corporate-action events: ``is_st`` is False and ``cash_div``,
  ``bonus_ratio``, ``transfer_ratio`` are 0, unless the operator dumped fields of those
  names (raytasks' own, stored as they are, not adjusted).

The root comes from the operator's settings, never from a task; codes must match
:data:`~.market.CODE`, so a file name cannot leave the root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .market import BAR_COLUMNS, CODE, EVENT_COLUMNS

REQUIRED_FIELDS = ("open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close")


def to_qlib_symbol(code: str) -> str:
    """``600000.SH`` -> ``SH600000`` (Qlib's instrument name)."""
    match = CODE.match(code)
    if not match:
        raise ValueError(f"{code!r} is not an A-share code like 000001.SZ")
    digits, exchange = match.groups()
    return exchange + digits


def from_qlib_symbol(symbol: str) -> str:
    """``SH600000`` (any case) -> ``600000.SH``."""
    code = f"{symbol[2:]}.{symbol[:2].upper()}"
    if not CODE.match(code):
        raise ValueError(f"{symbol!r} is not a Qlib A-share symbol like SH600000")
    return code


def tick(code: str) -> float:
    """The price step: 0.01 CNY, 0.001 for B shares (900xxx in USD, 200xxx in HKD)."""
    return 0.001 if code.startswith(("9", "2")) else 0.01


class QlibDayData:
    """Reads one Qlib data directory's day frequency (read-only)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def calendar(self) -> pd.DatetimeIndex:
        file = self.root / "calendars" / "day.txt"
        if not file.exists():
            raise ValueError("the Qlib data source has no calendars/day.txt")
        lines = [x.strip() for x in file.read_text(encoding="utf-8").splitlines()]
        return pd.DatetimeIndex(pd.to_datetime([x for x in lines if x]))

    def listed(self, code: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The ranges ``code`` is listed in ``instruments/all.txt`` (empty: not there)."""
        file = self.root / "instruments" / "all.txt"
        if not file.exists():
            raise ValueError("the Qlib data source has no instruments/all.txt")
        symbol = to_qlib_symbol(code)
        ranges = []
        for line in file.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split("\t")
            if len(parts) >= 3 and parts[0].upper() == symbol:
                ranges.append((pd.Timestamp(parts[1]), pd.Timestamp(parts[2])))
        return ranges

    def field(self, code: str, name: str, calendar: pd.DatetimeIndex) -> pd.Series | None:
        """The stored (adjusted) values of one field, by session; None when not dumped."""
        file = (self.root / "features" / to_qlib_symbol(code).lower() / f"{name}.day.bin")
        if not file.exists():
            return None
        raw = np.fromfile(file, dtype="<f4")
        if len(raw) == 0:
            return None
        first = int(raw[0])
        values = raw[1:].astype(np.float64)
        if first < 0 or first + len(values) > len(calendar):
            raise ValueError(f"{code}: {name}.day.bin runs past the calendar "
                             f"(starts at session {first}, {len(values)} values, "
                             f"{len(calendar)} sessions)")
        return pd.Series(values, index=calendar[first:first + len(values)])

    def bars(self, codes: list[str], start: str, end: str) -> pd.DataFrame:
        """Bars of ``codes`` between ``start`` and ``end`` (inclusive), in the schema."""
        for code in codes:
            if not CODE.match(code):
                raise ValueError(f"{code!r} is not an A-share code like 000001.SZ")
        calendar = self.calendar()
        frames = [self._one(code, calendar) for code in codes]
        bars = pd.concat(frames, ignore_index=True)
        bars = bars[(bars["date"] >= pd.Timestamp(start)) & (bars["date"] <= pd.Timestamp(end))]
        if bars.empty:
            raise ValueError(f"no bars for {codes} between {start} and {end} in the data source")
        return bars.sort_values(["code", "date"]).reset_index(drop=True)

    def _one(self, code: str, calendar: pd.DatetimeIndex) -> pd.DataFrame:
        ranges = self.listed(code)
        if not ranges:
            raise ValueError(f"{code} ({to_qlib_symbol(code)}) is not in the Qlib data "
                             "source's instruments/all.txt")
        stored: dict[str, pd.Series] = {}
        for name in (*REQUIRED_FIELDS, "factor", "amount", "money", "vwap", *EVENT_COLUMNS,
                     "is_st"):
            series = self.field(code, name, calendar)
            if series is not None:
                stored[name] = series
            elif name in REQUIRED_FIELDS:
                raise ValueError(f"{code}: the Qlib data source has no {name}.day.bin")
        frame = pd.DataFrame(stored)  # the union of the fields' sessions
        inside = np.zeros(len(frame), dtype=bool)
        for lo, hi in ranges:
            inside |= (frame.index >= lo) & (frame.index <= hi)
        frame = frame[inside]
        close = frame["close"]
        frame = frame[close.ffill().notna()]  # from the first close on
        factor = frame["factor"].ffill().bfill() if "factor" in frame else \
            pd.Series(1.0, index=frame.index)
        factor = factor.fillna(1.0)
        live = frame["close"].notna() & (frame["volume"].fillna(0.0) > 0)
        step = tick(code)
        reference = frame["close"].ffill() / factor
        out = pd.DataFrame({"code": code, "date": frame.index})
        for name in PRICE_FIELDS:
            price = (frame[name] / factor).where(live, reference)
            out[name] = (np.round(price / step) * step).round(3).to_numpy()
        out["volume"] = np.rint((frame["volume"] * factor).where(live, 0.0)).to_numpy()
        if "amount" in frame or "money" in frame:
            amount = frame["amount"] if "amount" in frame else frame["money"]
        elif "vwap" in frame:
            amount = frame["vwap"] * frame["volume"]
        else:
            amount = pd.Series(np.nan, index=frame.index)
        out["amount"] = amount.where(live, 0.0).to_numpy()
        out["adj_factor"] = factor.to_numpy()
        for name in EVENT_COLUMNS:
            out[name] = frame[name].fillna(0.0).to_numpy() if name in frame else 0.0
        out["is_st"] = (frame["is_st"].fillna(0.0) > 0.5).to_numpy() if "is_st" in frame \
            else False
        out["suspended"] = (~live).to_numpy()
        # code and date keep pandas' own types (str, datetime64), as the csv source's do
        types = {k: v for k, v in BAR_COLUMNS.items() if k not in ("code", "date")}
        return out.astype(types)[list(BAR_COLUMNS)]


def load_qlib_bars(root: str | Path, codes: list[str], start: str, end: str) -> pd.DataFrame:
    """Bars of ``codes`` from the Qlib data directory ``root`` (the operator's setting)."""
    return QlibDayData(root).bars(codes, start, end)
