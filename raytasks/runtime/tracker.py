"""The ``progress-tracker`` actor: the progress tracker's core plus its flush loop."""

from __future__ import annotations

import asyncio

from ..messages import RenewAnswer
from ..progress import ProgressTrackerCore
from ..settings import Settings
from ..store import SqlTaskStore
from ..store.sql import ACTOR_OPEN_WAIT_S
from .actors import MANAGER, NOTIFIER, Peers, every


class Tracker(ProgressTrackerCore):
    """The ``progress-tracker`` actor: renews leases with the manager, flushes progress."""

    def __init__(self, settings: Settings) -> None:
        assert settings.store_url is not None
        self.settings = settings
        self.peers = Peers(settings.namespace)
        super().__init__(SqlTaskStore(settings.store_url,
                                      busy_timeout_s=settings.store_busy_timeout_s,
                                      open_wait_s=ACTOR_OPEN_WAIT_S),
                         self._renew, flush_interval_s=settings.progress_flush_interval_s)
        self._loops = [asyncio.get_running_loop().create_task(every(
            settings.progress_flush_interval_s, self._flush_and_poke, "progress flush failed"))]

    async def _renew(self, leases: list[tuple[str, int]]) -> RenewAnswer:
        manager = self.peers.get(MANAGER)
        if manager is None:
            return RenewAnswer()
        answer: RenewAnswer = await manager.renew.remote(leases)
        return answer

    async def _flush_and_poke(self) -> None:
        notifier = self.peers.get(NOTIFIER)
        if await self.flush() and notifier is not None:
            notifier.poll.remote()

    def ready(self) -> bool:
        return True
