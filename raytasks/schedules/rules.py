"""When a schedule fires: cron expressions, fixed intervals and trading-calendar rules.

Pure functions of the rule, its timezone and a time: no clock is read here. Times are
epoch seconds; a rule is evaluated in its schedule's timezone (default Asia/Shanghai).

Trading rules use the XSHG calendar (SZSE shares it) with its holidays. Past the last
session the installed calendar knows (the end of its year) they fall back to weekdays,
and :func:`preview` marks those runs ``provisional``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: XSHG and XSHE close at 15:00 local time.
CLOSE = time(15, 0)
#: How far ahead a rule is searched for its next run.
HORIZON_DAYS = 800


class TradingRule(BaseModel):
    """Runs on trading days of the exchange calendar, at a local time or after the close."""

    model_config = ConfigDict(extra="forbid")

    calendar: Literal["XSHG", "XSHE"] = "XSHG"
    every: Literal["day", "week_first", "week_last", "month_first", "month_last"] = "day"
    at: str | None = Field(default="15:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                           description="local time HH:MM")
    after_close_min: int | None = Field(default=None, ge=0, le=540,
                                        description="instead of `at`: minutes after 15:00")

    def time_of_day(self) -> time:
        if self.after_close_min is not None:
            minutes = CLOSE.hour * 60 + self.after_close_min
            return time(minutes // 60 % 24, minutes % 60)
        assert self.at is not None
        hour, minute = self.at.split(":")
        return time(int(hour), int(minute))


class ScheduleRule(BaseModel):
    """Exactly one of: a 5-field cron expression, a fixed interval, a trading rule."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, max_length=120,
                             description="minute hour day-of-month month day-of-week")
    interval_s: float | None = Field(default=None, ge=1, le=366 * 86400,
                                     description="every N seconds from the schedule's start")
    trading: TradingRule | None = None

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from croniter import croniter

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError("not a 5-field cron expression (minute hour day month weekday)")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ScheduleRule:
        if sum(x is not None for x in (self.cron, self.interval_s, self.trading)) != 1:
            raise ValueError("give exactly one of cron, interval_s, trading")
        return self

    def shortest_gap_s(self, tz: str, now: float) -> float:
        """The shortest time between two of the next 50 runs (an owner's minimum
        interval is checked against it)."""
        runs = fires_between(self, tz, now, now + 400 * 86400, anchor=now, limit=50)
        gaps = [b - a for a, b in itertools.pairwise(runs)]
        return min(gaps, default=float("inf"))


def zone(name: str) -> ZoneInfo:
    """Raises ValueError for a name the tz database does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory ("Asia")
        raise ValueError(f"unknown timezone {name!r}") from None


def iana_zone(name: str) -> str:
    """``name``, if it is an IANA zone name: never a path, a folder of the tz database,
    one of its other files, or the host's own ``localtime`` (a client's zone is checked so).

    Raises:
        ValueError: any other name.
    """
    if name not in _iana_names():
        raise ValueError(f"unknown timezone {name!r} (give an IANA name, such as "
                         "Asia/Shanghai)")
    zone(name)
    return name


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones() - {"localtime"})


def fires_between(rule: ScheduleRule, tz: str, after: float, until: float,
                  *, anchor: float = 0.0, limit: int = 1000) -> list[float]:
    """The runs in ``(after, until]``, oldest first, at most ``limit``.

    ``anchor`` is where an interval rule counts from (the schedule's creation).
    """
    out: list[float] = []
    t = after
    while len(out) < limit:
        nxt = next_fire(rule, tz, t, anchor=anchor)
        if nxt is None or nxt > until:
            break
        out.append(nxt)
        t = nxt
    return out


def next_fire(rule: ScheduleRule, tz: str, after: float, *, anchor: float = 0.0) -> float | None:
    """The first run strictly after ``after`` (None if the rule has no more)."""
    if rule.interval_s is not None:
        step = rule.interval_s
        k = max(0, int((after - anchor) // step) + 1)
        nxt = anchor + k * step
        return nxt if nxt > after else nxt + step
    zoneinfo = zone(tz)
    start = datetime.fromtimestamp(after, tz=zoneinfo)
    if rule.cron is not None:
        from croniter import croniter

        value: datetime = croniter(rule.cron, start).get_next(datetime)
        return value.timestamp()
    assert rule.trading is not None
    return _next_trading(rule.trading, zoneinfo, start)


def _next_trading(rule: TradingRule, zoneinfo: ZoneInfo, start: datetime) -> float | None:
    return _next_on(rule.time_of_day(), zoneinfo, start, lambda day: _trading_match(rule, day))


def next_ready_by(ready_by: str, tz: str, after: float, *, sessions_only: bool) -> float | None:
    """The first ``ready_by`` (local ``HH:MM`` in ``tz``) strictly after ``after``.

    With ``sessions_only`` it falls on an exchange session (a Friday evening's is Monday's,
    the eve of a holiday's the next session's); without, on the same or the next day.
    """
    hour, minute = ready_by.split(":")
    zoneinfo = zone(tz)
    start = datetime.fromtimestamp(after, tz=zoneinfo)
    return _next_on(time(int(hour), int(minute)), zoneinfo, start,
                    is_session if sessions_only else (lambda _day: True))


def _next_on(at: time, zoneinfo: ZoneInfo, start: datetime,
             match: Callable[[date], bool]) -> float | None:
    """The first ``at`` strictly after ``start`` on a day ``match`` accepts."""
    after = start.timestamp()  # not ``>`` on datetimes: in one zone it ignores DST's fold
    day = start.date()
    for _ in range(HORIZON_DAYS):
        if match(day):
            candidate = datetime.combine(day, at, tzinfo=zoneinfo).timestamp()
            if candidate > after:
                return candidate
        day += timedelta(days=1)
    return None


def _trading_match(rule: TradingRule, day: date) -> bool:
    if not is_session(day):
        return False
    if rule.every == "day":
        return True
    if rule.every in ("week_first", "week_last"):
        week = [day - timedelta(days=day.weekday()) + timedelta(days=i) for i in range(7)]
        sessions = [d for d in week if is_session(d)]
    else:
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        sessions = [first + timedelta(days=i) for i in range((following - first).days)
                    if is_session(first + timedelta(days=i))]
    return day == (sessions[0] if rule.every.endswith("first") else sessions[-1])


def is_session(day: date) -> bool:
    """An exchange session; past the calendar's known range, any weekday."""
    if day > calendar_last():
        return day.weekday() < 5
    return day in _sessions()


def calendar_last() -> date:
    from ..quant.calendar import calendar_end

    return calendar_end().date()


_SESSIONS: set[date] = set()


def _sessions() -> set[date]:
    if not _SESSIONS:
        from ..quant.calendar import calendar_end, trading_days

        _SESSIONS.update(d.date() for d in trading_days("2007-01-04", calendar_end()))
    return _SESSIONS


def preview(rule: ScheduleRule, tz: str, after: float, count: int = 5, *,
            anchor: float = 0.0, end_at: float | None = None) -> list[dict[str, object]]:
    """The next ``count`` runs as ``{"at": datetime in the schedule's zone, "provisional"}``."""
    zoneinfo = zone(tz)
    out: list[dict[str, object]] = []
    t = after
    last_known = calendar_last()
    while len(out) < count:
        nxt = next_fire(rule, tz, t, anchor=anchor)
        if nxt is None or (end_at is not None and nxt > end_at):
            break
        when = datetime.fromtimestamp(nxt, tz=zoneinfo)
        out.append({"at": when, "provisional": rule.trading is not None
                    and when.date() > last_known})
        t = nxt
    return out
