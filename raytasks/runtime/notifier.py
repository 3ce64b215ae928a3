"""The ``notifier`` actor: the notification hub plus its poll and delivery loops."""

from __future__ import annotations

import asyncio
import logging

from ..notifications import NotificationHub
from ..notify import Dispatcher
from ..settings import Settings
from ..store import SqlTaskStore
from .actors import every

log = logging.getLogger(__name__)


class Notifier(NotificationHub):
    """The ``notifier`` actor: tails the outbox for streams and delivery channels."""

    def __init__(self, settings: Settings) -> None:
        assert settings.store_url is not None
        busy = settings.store_busy_timeout_s
        super().__init__(SqlTaskStore(settings.store_url, busy_timeout_s=busy),
                         buffer_size=settings.event_buffer_size)
        # its own store connection: the dispatcher's blocking I/O runs in a thread
        self.dispatcher = Dispatcher(SqlTaskStore(settings.store_url, busy_timeout_s=busy),
                                     settings.notify)
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(every(0.2, self.poll, "event poll failed"))]
        if self.dispatcher.channels:
            self._loops.append(loop.create_task(self._deliver_loop()))

    async def _deliver_loop(self) -> None:
        while True:
            try:
                moved = await asyncio.to_thread(self.dispatcher.tick)
            except Exception:
                log.exception("notification delivery failed")
                moved = 0
            if not moved:
                await asyncio.sleep(0.1)

