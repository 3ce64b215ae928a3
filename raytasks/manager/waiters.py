"""Executors waiting for work to arrive (long polls), woken when a task of their type can run."""

from __future__ import annotations

import asyncio


class Arrivals:
    """Wakes executors long-polling for work when a task of their type becomes runnable."""

    def __init__(self) -> None:
        # each waiter with how many types it waits for
        self._by_type: dict[str, dict[asyncio.Future[None], int]] = {}

    async def wait(self, task_types: list[str], timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        for t in task_types:
            self._by_type.setdefault(t, {})[future] = len(task_types)
        try:
            await asyncio.wait([future], timeout=timeout_s)
        finally:
            for t in task_types:
                futures = self._by_type.get(t)
                if futures is not None:
                    futures.pop(future, None)
                    if not futures:
                        del self._by_type[t]

    def arrived(self, task_type: str) -> None:
        """A task of ``task_type`` can run: wake one executor waiting for it.

        One per task: a lone task wakes one idle executor, not every one of them (each
        woken executor runs a lease round of its own), and a batch wakes as many as it
        has tasks. Any waiter of the type can lease what any other could, so the others
        sleep on; one already woken (for another of its types) is passed over, and of the
        rest the one that waits for the fewest types wakes: those that can also run
        other types stay for the arrivals only they can take.
        """
        futures = self._by_type.get(task_type)
        if not futures:
            return
        idle = [(types, i, f) for i, (f, types) in enumerate(futures.items()) if not f.done()]
        if idle:
            future = min(idle)[2]
            del futures[future]
            future.set_result(None)
        if not futures:
            del self._by_type[task_type]

    def at(self, when_s: float, task_type: str) -> None:
        """Wake waiters of ``task_type`` after ``when_s`` seconds (a delayed retry comes due)."""
        asyncio.get_running_loop().call_later(max(0.0, when_s), self.arrived, task_type)
