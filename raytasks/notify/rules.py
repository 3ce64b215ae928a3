"""Which events a channel sends, and how often: pure functions of the event and ``now``."""

from __future__ import annotations

import json
from typing import Any

from ..settings import ChannelRule

FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


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


#: Tasks whose last progress a filter remembers before it drops the stale entries.
MAX_TRACKED = 10_000


class RuleFilter:
    """Applies a :class:`ChannelRule`; throttles progress events per task.

    The per-task map stays bounded: a task's entry goes when it finishes, and entries
    older than ``min_interval_s`` (which no longer hold anything back) go when the map
    reaches ``max_tracked``.
    """

    def __init__(self, rule: ChannelRule, max_tracked: int = MAX_TRACKED) -> None:
        self.rule = rule
        self.max_tracked = max_tracked
        self._last_progress: dict[str, float] = {}

    def wants(self, payload: dict[str, Any], now: float) -> bool:
        if payload["kind"] == "progress":
            if "progress" not in self.rule.events:
                return False
            task_id = payload["task_id"]
            last = self._last_progress.get(task_id, float("-inf"))
            if now - last < self.rule.min_interval_s:
                return False
            if len(self._last_progress) >= self.max_tracked and task_id not in \
                    self._last_progress:
                self._last_progress = {k: t for k, t in self._last_progress.items()
                                       if now - t < self.rule.min_interval_s}
            if len(self._last_progress) < self.max_tracked or task_id in self._last_progress:
                self._last_progress[task_id] = now  # (else unthrottled: bounded first)
            return True
        if payload.get("status") in FINISHED:  # no progress follows a final status
            self._last_progress.pop(payload.get("task_id", ""), None)
        if payload.get("status") not in self.rule.events:
            return False
        priority = payload.get("priority")
        return priority is None or priority in self.rule.priorities
