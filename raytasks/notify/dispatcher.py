"""Dispatcher: tails the event outbox and feeds each channel from its own durable cursor.

A channel's cursor moves past an event only once the channel is done with it
(delivered, held for a digest, or given up), and is written to the store
right away: a notifier killed mid-delivery resumes from there, so nothing is
lost and at most the event in flight is delivered twice (receivers
de-duplicate on the event id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..settings import NotifySettings
from ..store import SqlTaskStore
from .email import EmailChannel
from .rules import event_payload
from .webhooks import WebhookChannel

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, store: SqlTaskStore, settings: NotifySettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.channels: list[Any] = [WebhookChannel(t, settings) for t in settings.webhooks]
        if settings.email is not None:
            self.channels.append(EmailChannel(settings.email, store))
        start = store.max_event_id()
        self.cursors = {}
        for channel in self.channels:
            cursor = store.get_cursor(channel.name)
            if cursor is None:  # a new channel starts with what happens from now on
                cursor = start
                store.set_cursor(channel.name, cursor)
            self.cursors[channel.name] = cursor

    def tick(self, batch: int = 200) -> int:
        """Deliver what is due on every channel; returns how many events moved on."""
        moved = 0
        for channel in self.channels:
            now = self.clock()
            if isinstance(channel, EmailChannel):
                self.store.log_delivery(channel.flush_digests(now))
            if now < channel.retry_at:
                continue
            for row in self.store.events_after(self.cursors[channel.name], limit=batch):
                payload = event_payload(row)
                if channel.filter.wants(payload, now):
                    done, entries = channel.deliver(payload, now)
                    self.store.log_delivery(entries if isinstance(entries, list)
                                            else [entries])
                    if not done:
                        break
                self.cursors[channel.name] = row["id"]
                self.store.set_cursor(channel.name, row["id"])
                moved += 1
        return moved
