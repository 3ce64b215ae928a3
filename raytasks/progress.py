"""ProgressTrackerCore: latest progress per task, lease renewal, throttled forwarding."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .models import TaskProgress, TaskStatus
from .store import SqlTaskStore
from .store.base import to_json

Renew = Callable[[list[tuple[str, int]]], Awaitable[dict[str, list[str]]]]


class ProgressTrackerCore:
    """Executors report here; the tracker renews their leases with the manager.

    Progress is kept in memory, written to the store in batches every
    ``flush_interval_s`` (so it survives a restart), and appended to the event
    stream at most once per ``flush_interval_s`` per task.
    """

    def __init__(self, store: SqlTaskStore, renew: Renew, *, flush_interval_s: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.renew = renew
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.latest: dict[str, TaskProgress] = {}
        self._dirty: set[str] = set()

    async def heartbeat(self, executor_id: str, leases: list[tuple[str, int]],
                        progress: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Renew ``leases`` and record ``progress``; returns the manager's lost/cancel lists."""
        for row in progress:
            p = TaskProgress(status=TaskStatus.RUNNING, **row)
            self.latest[p.task_id] = p
            self._dirty.add(p.task_id)
        if not leases:
            return {"lost": [], "cancel": []}
        return await self.renew(leases)

    def flush(self) -> list[dict[str, Any]]:
        """Persist dirty progress; returns the progress events written.

        One read of the tasks gives each event its owner and drops the events of tasks
        that finished meanwhile (they would trail, and seem to undo, the final status).
        """
        if not self._dirty:
            return []
        now = self.clock()
        dirty, self._dirty = sorted(self._dirty), set()
        tasks = self.store.get_many(dirty)
        rows, events = [], []
        for task_id in dirty:
            p = self.latest[task_id]
            rows.append({"task_id": task_id, "payload": p.model_dump_json(), "updated_at": now})
            task = tasks.get(task_id)
            if task is None or task.status.finished:
                continue
            events.append({"task_id": task_id, "kind": "progress", "created_at": now,
                           "payload": to_json({"task_id": task_id, "owner": task.owner,
                                               "percentage": p.percentage,
                                               "message": p.message, "stage": p.stage,
                                               "eta_s": p.eta_s, "at": p.updated_at})})
        self.store.save_progress(rows)
        self.store.append_events(events)
        return events

    def get_progress(self, task_id: str) -> TaskProgress | None:
        """Latest progress, with the task's stored status; None for an unknown id."""
        task = self.store.get(task_id)
        if task is None:
            self.latest.pop(task_id, None)
            return None
        p = self.latest.get(task_id)
        if p is None:
            row = self.store.get_progress(task_id)
            p = TaskProgress.model_validate(json.loads(row["payload"])) if row else \
                TaskProgress(task_id=task_id)
        update: dict[str, Any] = {"status": task.status}
        if task.status is TaskStatus.COMPLETED:
            update.update(percentage=1.0, eta_s=0.0)
        if task.status.finished:
            self.latest.pop(task_id, None)
        elif task.status is TaskStatus.PENDING and p.status is TaskStatus.RUNNING:
            update["message"] = f"waiting to retry (attempt {task.attempt})"
        return p.model_copy(update=update)
