"""Dispatcher: tails the event outbox and feeds each channel from its own durable cursor.

A channel's cursor moves past an event once every recipient of it has had a
first try; the cursor is written to the store right away, so a notifier killed
mid-delivery resumes from there (at most the event in flight is sent twice;
receivers de-duplicate on the event id).

One bad event never blocks a channel: an event whose delivery fails is retried
on its own with backoff, while the events behind it go on, and after the
channel's ``max_attempts`` it is dead-lettered with its reason in the delivery
log. An event that can never be delivered (a refused target, a message that
cannot be built, a payload that does not parse) is dead-lettered at once. Only
an unreachable peer (:class:`ChannelDown`) pauses the whole channel, with
backoff. Pending retries are in the delivery log (outcome ``retry``), so a
restarted notifier picks them up again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..lifecycle import retry_delay_s
from ..settings import NotifySettings
from ..store import SqlTaskStore
from .email import EmailChannel
from .rules import ChannelDown, RuleFilter, Undeliverable, delivery_row, event_payload
from .webhooks import WebhookChannel

log = logging.getLogger(__name__)

RETRY, DEAD = "retry", "dead-letter"


class Channel(Protocol):
    name: str
    filter: RuleFilter
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float

    def targets(self, payload: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]: ...
    def send(self, payload: dict[str, Any], target: str, now: float) -> str: ...
    def detail(self, payload: dict[str, Any], outcome: str) -> str: ...
    def flush(self, now: float) -> list[dict[str, Any]]: ...


@dataclass
class _Retry:
    payload: dict[str, Any]
    target: str
    attempt: int  # tries so far
    due: float


class Dispatcher:
    def __init__(self, store: SqlTaskStore, settings: NotifySettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.channels: list[Channel] = [WebhookChannel(t, settings) for t in settings.webhooks]
        if settings.email is not None:
            self.channels.append(EmailChannel(settings.email, store))
        start = store.max_event_id()
        self.cursors: dict[str, int] = {}
        self.retries: dict[str, dict[tuple[int, str], _Retry]] = {}
        self.paused_until: dict[str, float] = {}
        self._downs: dict[str, int] = {}
        for channel in self.channels:
            cursor = store.get_cursor(channel.name)
            if cursor is None:  # a new channel starts with what happens from now on
                cursor = start
                store.set_cursor(channel.name, cursor)
            self.cursors[channel.name] = cursor
            self.retries[channel.name] = self._pending(channel.name)
            if not self.retries[channel.name]:
                store.set_delivery_outcome(channel.name, RETRY, "retried")

    def _pending(self, channel: str) -> dict[tuple[int, str], _Retry]:
        """The retries a previous life left (a retry already done is sent once more)."""
        pending: dict[tuple[int, str], _Retry] = {}
        for row in self.store.deliveries(channel=channel, outcome=RETRY, limit=100_000):
            events = self.store.events_after(int(row["event_id"]) - 1, limit=1)
            if events and events[0]["id"] == row["event_id"]:
                pending[(row["event_id"], row["target"])] = _Retry(
                    event_payload(events[0]), row["target"], int(row["attempt"]), 0.0)
        return pending

    def tick(self, batch: int = 200) -> int:
        """Deliver what is due on every channel; returns how many events moved on."""
        moved = 0
        for channel in self.channels:
            now = self.clock()
            self.store.log_delivery(channel.flush(now))
            if now < self.paused_until.get(channel.name, 0.0):
                continue
            if not self._retry_due(channel, now):
                continue
            for row in self.store.events_after(self.cursors[channel.name], limit=batch):
                up = self._first_try(channel, row, now)
                self.cursors[channel.name] = row["id"]
                self.store.set_cursor(channel.name, row["id"])
                moved += 1
                if not up:
                    break
        return moved

    def _retry_due(self, channel: Channel, now: float) -> bool:
        """Try the channel's due retries; False if the channel went down meanwhile."""
        book = self.retries[channel.name]
        tried = False
        for key, retry in sorted(book.items(), key=lambda kv: kv[1].due):
            if retry.due > now:
                break
            del book[key]
            tried = True
            if not self._try(channel, retry.payload, retry.target, retry.attempt + 1, now):
                return False
        if tried and not book:  # nothing pending: no "retry" row of the log is live any more
            self.store.set_delivery_outcome(channel.name, RETRY, "retried")
        return True

    def _first_try(self, channel: Channel, row: dict[str, Any], now: float) -> bool:
        """Send one new event to each of its recipients; False if the channel went down."""
        try:
            payload = event_payload(row)
            if not channel.filter.wants(payload, now):
                return True
            targets, refused = channel.targets(payload)
        except Exception as exc:  # a poisoned event must not stall the cursor
            log.warning("notification event %s dead-lettered on %s: %s", row.get("id"),
                        channel.name, exc)
            self.store.log_delivery([delivery_row(channel.name, "*", row["id"], 1, DEAD,
                                                  f"{type(exc).__name__}: {exc}", now)])
            return True
        self.store.log_delivery([delivery_row(channel.name, entry, row["id"], 1, "refused",
                                              why, now) for entry, why in refused])
        for i, target in enumerate(targets):
            if not self._try(channel, payload, target, 1, now):
                for later in targets[i + 1:]:  # the rest wait for the channel, untried
                    self.retries[channel.name][(row["id"], later)] = _Retry(
                        payload, later, 0, self.paused_until[channel.name])
                return False
        return True

    def _try(self, channel: Channel, payload: dict[str, Any], target: str, attempt: int,
             now: float) -> bool:
        """One attempt, logged; schedules the next or dead-letters. False: channel down."""
        event_id = int(payload["event_id"])
        try:
            outcome = channel.send(payload, target, now)
        except Undeliverable as exc:
            self._log(channel, target, event_id, attempt, DEAD, str(exc), now)
            return True
        except Exception as exc:  # any failure is this event's, retried below
            down = isinstance(exc, ChannelDown)
            reason = str(exc) if down else f"{type(exc).__name__}: {exc}"
            if attempt >= channel.max_attempts:
                self._log(channel, target, event_id, attempt, DEAD,
                          f"gave up after {attempt} attempts: {reason}", now)
            else:
                delay = retry_delay_s(attempt, channel.backoff_base_s, channel.backoff_max_s, 0.2)
                self.retries[channel.name][(event_id, target)] = _Retry(
                    payload, target, attempt, now + delay)
                self._log(channel, target, event_id, attempt, RETRY, reason, now)
            if down:
                downs = self._downs[channel.name] = self._downs.get(channel.name, 0) + 1
                self.paused_until[channel.name] = now + retry_delay_s(
                    downs, channel.backoff_base_s, channel.backoff_max_s, 0.2)
                return False
            return True
        self._downs[channel.name] = 0
        self._log(channel, target, event_id, attempt, outcome,
                  channel.detail(payload, outcome), now)
        return True

    def _log(self, channel: Channel, target: str, event_id: int, attempt: int, outcome: str,
             detail: str, now: float) -> None:
        self.store.log_delivery([delivery_row(channel.name, target, event_id, attempt, outcome,
                                              detail, now)])
