"""Executors waiting for work (long polls): woken when a task of their type can run, or lent
to a client while they wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..messages import Loan


@dataclass(eq=False)
class _Waiter:
    executor_id: str
    types: int  # how many types it waits for
    future: asyncio.Future[Loan | None]


class Arrivals:
    """Wakes executors long-polling for work when a task of their type becomes runnable."""

    def __init__(self) -> None:
        self._by_type: dict[str, list[_Waiter]] = {}

    async def wait(self, executor_id: str, task_types: list[str],
                   timeout_s: float) -> Loan | None:
        """Wait up to ``timeout_s`` for work of ``task_types``; the loan if the executor
        was lent to a client meanwhile (see :meth:`lend`)."""
        waiter = _Waiter(executor_id, len(task_types),
                         asyncio.get_running_loop().create_future())
        for t in task_types:
            self._by_type.setdefault(t, []).append(waiter)
        try:
            await asyncio.wait([waiter.future], timeout=timeout_s)
        finally:
            for t in task_types:
                waiters = self._by_type.get(t)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._by_type[t]
        return waiter.future.result() if waiter.future.done() else None

    def arrived(self, task_type: str) -> None:
        """A task of ``task_type`` can run: wake one executor waiting for it.

        One per task: a lone task wakes one idle executor, not every one of them (each
        woken executor runs a lease round of its own), and a batch wakes as many as it
        has tasks. Any waiter of the type can lease what any other could, so the others
        sleep on; one already woken (for another of its types) is passed over, and of the
        rest the one that waits for the fewest types wakes (the longest waiting first):
        those that can also run other types stay for the arrivals only they can take.
        """
        waiter = self._idle(task_type)
        if waiter is not None:
            waiter.future.set_result(None)

    def lend(self, task_type: str, loan: Callable[[str], Loan]) -> Loan | None:
        """Lend an executor waiting for ``task_type`` (chosen as :meth:`arrived` chooses):
        its wait ends with ``loan(executor_id)``, which is returned. None: none waits."""
        waiter = self._idle(task_type)
        if waiter is None:
            return None
        lent = loan(waiter.executor_id)
        waiter.future.set_result(lent)
        return lent

    def idle(self, task_type: str) -> int:
        """Executors waiting for work of ``task_type`` now (not woken, not lent)."""
        return sum(1 for w in self._by_type.get(task_type, ()) if not w.future.done())

    def at(self, when_s: float, task_type: str) -> None:
        """Wake waiters of ``task_type`` after ``when_s`` seconds (a delayed retry comes due)."""
        asyncio.get_running_loop().call_later(max(0.0, when_s), self.arrived, task_type)

    def _idle(self, task_type: str) -> _Waiter | None:
        """The waiter of ``task_type`` to wake: of those not woken yet, the one that waits
        for the fewest types, the longest waiting first."""
        waiters = self._by_type.get(task_type)
        idle = [(w.types, i, w) for i, w in enumerate(waiters or ()) if not w.future.done()]
        if not idle:
            return None
        return min(idle, key=lambda t: t[:2])[2]
