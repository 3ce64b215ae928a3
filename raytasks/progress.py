"""ProgressTrackerCore: latest progress per running task, lease renewal, fenced forwarding."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from .messages import LogLine, ProgressReport, RenewAnswer
from .models import TaskProgress, TaskStatus
from .store import SqlTaskStore
from .store.base import to_json

Renew = Callable[[list[tuple[str, int]]], Awaitable[RenewAnswer]]

#: Progress of a task not heard from for this long is dropped from memory (the store has it).
FORGET_AFTER_S = 120.0


class ProgressTrackerCore:
    """Executors heartbeat here; the tracker renews their leases with the manager.

    The latest progress of each running attempt is kept in memory and written to
    the store every ``flush_interval_s`` together with one progress event per task,
    both only while that attempt still holds the lease (checked in the same
    transaction). Memory holds running tasks only: a lost lease, a flush that finds
    the task finished, or ``FORGET_AFTER_S`` of silence drops an entry.
    """

    def __init__(self, store: SqlTaskStore, renew: Renew, *, flush_interval_s: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.renew = renew
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.latest: dict[str, ProgressReport] = {}
        self._heard: dict[str, float] = {}
        self._dirty: set[str] = set()

    async def heartbeat(self, executor_id: str, leases: list[tuple[str, int]],
                        progress: list[ProgressReport],
                        logs: list[LogLine] | None = None) -> RenewAnswer:
        """Record ``progress``, write ``logs`` and renew ``leases``; says which leases are
        lost or to be cancelled.

        Log lines are written before the answer (fenced by their attempt's lease): an
        attempt's last lines are stored before its report, which follows this call.
        """
        now = self.clock()
        if logs:
            await asyncio.to_thread(self.store.logs.append, [line._asdict() for line in logs])
        for report in progress:
            held = self.latest.get(report.task_id)
            if held is None or (report.token, report.updated_at) >= (held.token,
                                                                      held.updated_at):
                self.latest[report.task_id] = report
                self._dirty.add(report.task_id)
        for task_id, _token in leases:
            self._heard[task_id] = now
        if not leases:
            return RenewAnswer()
        answer = await self.renew(leases)
        for task_id in answer.lost:
            self._forget(task_id)
        return answer

    async def flush(self) -> int:
        """Persist dirty progress and its events (fenced); returns how many were sent."""
        now = self.clock()
        for task_id, heard in list(self._heard.items()):
            if now - heard > FORGET_AFTER_S:
                self._forget(task_id)
        if not self._dirty:
            return 0
        dirty, self._dirty = sorted(self._dirty), set()
        rows = []
        for task_id in dirty:
            r = self.latest.get(task_id)
            if r is None:
                continue
            rows.append((r, to_json({"task_id": task_id, "owner": r.owner,
                                     "percentage": r.percentage, "message": r.message,
                                     "stage": r.stage, "eta_s": None, "at": r.updated_at})))
        await asyncio.to_thread(self.store.record_progress, rows, now)
        finished = await asyncio.to_thread(self._finished, [r.task_id for r, _ in rows])
        for task_id in finished:
            self._forget(task_id)
        return len(rows)

    def _finished(self, task_ids: list[str]) -> list[str]:
        states = self.store.states(task_ids)
        return [t for t in task_ids if t not in states or states[t][0].finished]

    def _forget(self, task_id: str) -> None:
        self.latest.pop(task_id, None)
        self._heard.pop(task_id, None)
        self._dirty.discard(task_id)

    async def get_progress(self, task_id: str) -> TaskProgress | None:
        """Latest progress, with the task's stored status; None for an unknown id."""
        return await asyncio.to_thread(self._progress, task_id)

    def _progress(self, task_id: str) -> TaskProgress | None:
        task = self.store.get(task_id)
        if task is None:
            return None
        live = self.latest.get(task_id)
        if live is not None and live.token == task.lease_token:
            p = TaskProgress(task_id=task_id, status=TaskStatus.RUNNING,
                             percentage=live.percentage, message=live.message,
                             stage=live.stage, updated_at=live.updated_at)
        else:
            row = self.store.get_progress(task_id)
            p = TaskProgress.model_validate(json.loads(row["payload"])) if row else \
                TaskProgress(task_id=task_id)
        update: dict[str, object] = {"status": task.status}
        if task.status is TaskStatus.COMPLETED:
            update.update(percentage=1.0, eta_s=0.0)
        elif task.status is TaskStatus.PENDING and p.status is TaskStatus.RUNNING:
            update["message"] = f"waiting to retry (attempt {task.attempt})"
        return p.model_copy(update=update)
