"""Which events a channel sends, and how often: pure functions of the event and ``now``."""

from __future__ import annotations

import json
from typing import Any

from ..settings import ChannelRule


class ChannelDown(Exception):
    """A channel's peer (SMTP server, webhook receiver) is unreachable: not this event's
    fault, so the channel pauses instead of burning through the events behind it."""


class Undeliverable(Exception):
    """This event can never be delivered to this target (refused target, a message that
    cannot be built): dead-letter it at once rather than retrying."""


def event_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The documented JSON body of an event (what webhooks receive)."""
    payload: dict[str, Any] = json.loads(row["payload"])
    payload["event_id"] = row["id"]
    payload["kind"] = row["kind"]
    return payload


def delivery_row(channel: str, target: str, event_id: int, attempt: int, outcome: str,
                 detail: str, now: float) -> dict[str, Any]:
    """One line of the delivery log."""
    return {"channel": channel, "target": target[:2000], "event_id": int(event_id),
            "attempt": attempt, "outcome": outcome, "detail": detail[:2000], "at": now}


class RuleFilter:
    """Applies a :class:`ChannelRule`; throttles progress events per task."""

    def __init__(self, rule: ChannelRule) -> None:
        self.rule = rule
        self._last_progress: dict[str, float] = {}

    def wants(self, payload: dict[str, Any], now: float) -> bool:
        if payload["kind"] == "progress":
            if "progress" not in self.rule.events:
                return False
            last = self._last_progress.get(payload["task_id"], float("-inf"))
            if now - last < self.rule.min_interval_s:
                return False
            self._last_progress[payload["task_id"]] = now
            return True
        if payload.get("status") not in self.rule.events:
            return False
        priority = payload.get("priority")
        return priority is None or priority in self.rule.priorities
