"""The Shanghai/Shenzhen trading calendar, holidays included (``exchange_calendars``' XSHG).

SSE and SZSE share one calendar. Sessions are known from 2006-11-29 to the
end of the library's current year; asking outside that range raises.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

import pandas as pd

from .clock import SHANGHAI, completed_through

__all__ = ["SHANGHAI", "calendar_end", "completed_through", "is_trading_day",
           "last_completed_session", "trading_days", "trading_days_back"]


@lru_cache(maxsize=1)
def _calendar() -> object:
    import exchange_calendars as xc

    return xc.get_calendar("XSHG")


def trading_days(start: str | pd.Timestamp, end: str | pd.Timestamp) -> pd.DatetimeIndex:
    """Every trading session from ``start`` to ``end`` inclusive (naive dates)."""
    cal = _calendar()
    sessions = cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))  # type: ignore[attr-defined]
    return pd.DatetimeIndex(sessions).tz_localize(None)


def calendar_end() -> pd.Timestamp:
    """The last session the installed calendar knows (the end of its current year)."""
    last = pd.Timestamp(_calendar().last_session)  # type: ignore[attr-defined]
    return last.tz_localize(None) if last.tz is not None else last


def is_trading_day(day: str | pd.Timestamp) -> bool:
    return bool(_calendar().is_session(pd.Timestamp(day)))  # type: ignore[attr-defined]


def trading_days_back(end: str | pd.Timestamp, count: int) -> pd.DatetimeIndex:
    """The last ``count`` sessions up to and including ``end``."""
    end_ts = pd.Timestamp(end)
    span = trading_days(end_ts - pd.Timedelta(days=int(count * 1.6) + 30), end_ts)
    if len(span) < count:
        raise ValueError(f"the calendar has only {len(span)} sessions before {end_ts.date()}")
    return span[-count:]


def last_completed_session(now: datetime | None = None) -> pd.Timestamp:
    """The last XSHG session that has closed at ``now`` (default: the current time)."""
    cal = _calendar()
    day = min(pd.Timestamp(completed_through(now)), calendar_end())
    return pd.Timestamp(cal.date_to_session(day, direction="previous")).tz_localize(None)  # type: ignore[attr-defined]
