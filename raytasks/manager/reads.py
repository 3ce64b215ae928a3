"""What the manager answers by reading: tasks, pages, counts, log lines. Nothing here
changes memory or the store; every read runs off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import TaskNotFoundError
from ..models import Task, TaskQuery, TaskStatus
from ..store.base import TaskRows, with_artifact
from .parts import Parts


class Reads:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def get(self, task_id: str) -> Task:
        """The task as stored, its result loaded from its file where it is one.

        Raises:
            TaskNotFoundError: no such task.
        """
        (task,) = await self.get_many([task_id])
        return task

    async def get_many(self, task_ids: list[str]) -> list[Task]:
        """The tasks as stored, in the order asked.

        Raises:
            TaskNotFoundError: the first id that does not exist.
        """
        def read() -> list[Task]:
            found = self.parts.store.get_many(task_ids)
            missing = [t for t in task_ids if t not in found]
            if missing:
                raise TaskNotFoundError(missing[0])
            return [with_artifact(found[t]) for t in task_ids]
        return await asyncio.to_thread(read)

    async def stored(self, task_id: str) -> Task:
        """The task's row as stored (its result file not loaded).

        Raises:
            TaskNotFoundError: no such task.
        """
        task = await asyncio.to_thread(self.parts.store.get, task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def query(self, query: TaskQuery) -> TaskRows:
        """A page of tasks. Its total comes from the counters when the filters are only
        owner and status (no count query at all), else from a capped count."""
        counted = not (query.task_type or query.priority or query.queue or query.tags
                       or query.created_after or query.created_before or query.text)
        page: TaskRows = await asyncio.to_thread(self.parts.store.query, query,
                                                 count=not counted)
        if counted:
            counts = self.status_counts(query.owner)
            statuses = [s.value for s in query.status] if query.status else list(counts)
            page = page._replace(total=sum(counts.get(s, 0) for s in statuses))
        return page

    def status_counts(self, owner: str | None = None) -> dict[str, int]:
        """Tasks by status (of one owner, or all), from memory: no scan of the store."""
        parts = self.parts
        owners: set[str | None] | None = None if owner is None else {owner}
        counts = parts.counts.by_status(owners)
        for status, by_owner in ((TaskStatus.PENDING, parts.active.pending),
                                 (TaskStatus.RUNNING, parts.active.running)):
            n = sum(v for o, v in by_owner.items() if owners is None or o in owners)
            if n:
                counts[status.value] = n
        return dict(counts)

    async def log_page(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                       limit: int = 1000) -> tuple[TaskStatus, list[dict[str, Any]]]:
        """The task's status and its next log lines, in one call (for followers).

        The status is read first: lines are written before an attempt reports, so a task
        seen finished has all of its lines in the store by the read that follows.

        Raises:
            TaskNotFoundError: no such task.
        """
        store = self.parts.store

        def read() -> tuple[TaskStatus, list[dict[str, Any]]]:
            state = store.states([task_id]).get(task_id)
            if state is None:
                raise TaskNotFoundError(task_id)
            return state[0], store.logs.read(task_id, attempt, after_id, limit)
        return await asyncio.to_thread(read)
