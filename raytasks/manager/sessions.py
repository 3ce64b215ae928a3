"""Watch sessions: one stream of finished tasks per client, however many tasks it waits on.

A client registers the tasks it waits for under its session (or has them registered by
its submit) and keeps one long poll open; each task that finishes is queued for every
session watching it and the poll returns. Sessions nobody polled for ``ttl_s`` are
forgotten, so memory follows the clients that are still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class _Session:
    watching: set[str] = field(default_factory=set)
    ready: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    seen: float = 0.0
    polls: int = 0  # how many polls came: the latest one is the client's


class Sessions:
    def __init__(self, *, ttl_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._sessions: dict[str, _Session] = {}
        self._by_task: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def watch(self, session_id: str, task_ids: Iterable[str]) -> None:
        """Queue ``task_ids`` for the session when they finish (they must be running or
        waiting: the caller answers finished ones itself)."""
        session = self._session(session_id)
        for task_id in task_ids:
            if task_id not in session.watching:
                session.watching.add(task_id)
                self._by_task.setdefault(task_id, set()).add(session_id)

    def finished(self, task_id: str) -> None:
        for session_id in self._by_task.pop(task_id, ()):
            session = self._sessions.get(session_id)
            if session is not None:
                session.watching.discard(task_id)
                session.ready.append(task_id)
                session.wake.set()

    def drop(self, session_id: str) -> None:
        """Forget a session now (a one-off wait that is over)."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self._unwatch(session_id, session)

    def known(self, session_id: str) -> bool:
        return session_id in self._sessions

    async def next(self, session_id: str, timeout_s: float) -> list[str]:
        """Ids of watched tasks that finished; waits up to ``timeout_s`` for one.

        A client polls one at a time; a poll still open when its next one comes was given
        up (its answer would be read by nobody), so it ends at once, taking nothing.
        """
        session = self._session(session_id)
        session.polls += 1
        poll = session.polls
        if not session.ready:
            session.wake.set()  # the open poll, if any, gives way to this one
            session.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wake.wait(), timeout=timeout_s)
        if poll != session.polls:
            return []
        session.seen = self.clock()
        ready, session.ready = session.ready, []
        self._expire()
        return ready

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
        session.seen = self.clock()
        return session

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl_s
        for session_id, session in list(self._sessions.items()):
            if session.seen < cutoff:
                del self._sessions[session_id]
                self._unwatch(session_id, session)

    def _unwatch(self, session_id: str, session: _Session) -> None:
        for task_id in session.watching:
            watchers = self._by_task.get(task_id)
            if watchers is not None:
                watchers.discard(session_id)
                if not watchers:
                    del self._by_task[task_id]
