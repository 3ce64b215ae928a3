"""NotificationHub: the event stream and the first delivery channel (client callbacks).

Every status change is written to the store's event table in the same commit
as the change itself (an outbox), and progress events by the tracker. The hub
tails that table into a ring buffer and serves ``stream(after_id)`` long
polls; a client that reconnects resumes from its last id and misses nothing
that is still in the table.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .metrics import MetricsRecorder
from .models import TaskNotification, TaskProgressNotification, TaskStatusNotification
from .store import SqlTaskStore


def to_notification(row: dict[str, Any]) -> TaskNotification:
    payload = json.loads(row["payload"])
    payload["event_id"] = row["id"]
    payload["at"] = datetime.fromtimestamp(payload.get("at") or row["created_at"], tz=UTC)
    if row["kind"] == "progress":
        return TaskProgressNotification.model_validate(payload)
    return TaskStatusNotification.model_validate(payload)


class NotificationHub:
    def __init__(self, store: SqlTaskStore, *, buffer_size: int = 10_000,
                 metrics: MetricsRecorder | None = None) -> None:
        self.store = store
        self.ring: deque[dict[str, Any]] = deque(maxlen=buffer_size)
        last = store.max_event_id()
        self.ring.extend(store.events_after(max(0, last - buffer_size), limit=buffer_size))
        self.cursor = self.ring[-1]["id"] if self.ring else last
        self._new = asyncio.Event()
        self.metrics = metrics if metrics is not None else MetricsRecorder()
        #: streams waiting for an event now; ``on_listen`` is called as one starts waiting
        self.listeners = 0
        self.on_listen: Callable[[], None] | None = None

    async def poll(self) -> int:
        """Read new events from the store into the ring; wake streams. Returns how many."""
        rows = await asyncio.to_thread(self.store.events_after, self.cursor, 5000)
        rows = [r for r in rows if r["id"] > self.cursor]  # another poll may have run meanwhile
        if rows:
            self.metrics.observe(rows)
            self.ring.extend(rows)
            self.cursor = rows[-1]["id"]
            self._new.set()
            self._new = asyncio.Event()
        return len(rows)

    async def stream(self, after_id: int = 0, timeout_s: float = 10.0,
                     limit: int = 1000) -> list[TaskNotification]:
        """Events with id > ``after_id`` (oldest first); waits up to ``timeout_s`` for one."""
        await self.poll()
        if after_id >= self.cursor and timeout_s > 0:
            self.listeners += 1
            if self.on_listen is not None:
                self.on_listen()
            try:
                await asyncio.wait_for(self._new.wait(), timeout=timeout_s)
            except TimeoutError:
                return []
            finally:
                self.listeners -= 1
        if self.ring and self.ring[0]["id"] <= after_id + 1:
            rows = [r for r in self.ring if r["id"] > after_id][:limit]
        else:
            rows = await asyncio.to_thread(self.store.events_after, after_id, limit)
        return [to_notification(r) for r in rows]

    async def metrics_text(self) -> str:
        await self.poll()
        return self.metrics.text()

    def last_event_id(self) -> int:
        return self.cursor
