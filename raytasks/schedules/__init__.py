"""Recurring work: cron, interval and trading-calendar schedules (see ``rules`` and ``book``)."""

from .models import Schedule, ScheduleCreateRequest
from .rules import ScheduleRule, TradingRule

__all__ = ["Schedule", "ScheduleCreateRequest", "ScheduleRule", "TradingRule"]
