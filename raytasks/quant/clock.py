"""What the market has finished: the date through which every SSE/SZSE session has closed.

Light on purpose (no pandas, no calendar): parameter models use it for their defaults.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def completed_through(now: datetime | None = None) -> str:
    """``YYYY-MM-DD`` through which every session has closed: a session closes at 15:00
    Shanghai time, so it is the Shanghai date of ``now - 15 h``. Bars up to this date end
    on the last completed trading day."""
    moment = (now or datetime.now(SHANGHAI)).astimezone(SHANGHAI) - timedelta(hours=15)
    return moment.strftime("%Y-%m-%d")
