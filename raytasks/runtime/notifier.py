"""The ``notifier`` actor: the notification hub plus its poll and delivery loops."""

from __future__ import annotations

import asyncio
import logging
import time

from ..metrics import MetricsRecorder
from ..notifications import NotificationHub
from ..notify import Dispatcher
from ..settings import Settings
from ..store import SqlTaskStore
from ..store.sql import ACTOR_OPEN_WAIT_S
from .actors import MANAGER, Peers, every
from .metrics import RayMetricsMirror

log = logging.getLogger(__name__)

#: While streams wait, the manager is asked to poke this actor as events commit, for
#: this long; asked again at most every ``ASK_EVERY_S`` while any stream waits.
POKES_FOR_S = 5.0
ASK_EVERY_S = 1.0


class Notifier(NotificationHub):
    """The ``notifier`` actor: tails the outbox for streams and delivery channels."""

    def __init__(self, settings: Settings) -> None:
        assert settings.store_url is not None
        busy = settings.store_busy_timeout_s
        super().__init__(SqlTaskStore(settings.store_url, busy_timeout_s=busy,
                                      open_wait_s=ACTOR_OPEN_WAIT_S),
                         buffer_size=settings.event_buffer_size,
                         metrics=MetricsRecorder(RayMetricsMirror()))
        # its own store connection: the dispatcher's blocking I/O runs in a thread
        self.dispatcher = Dispatcher(SqlTaskStore(settings.store_url, busy_timeout_s=busy),
                                     settings.notify)
        self.peers = Peers(settings.namespace)
        self._asked = 0.0
        self.on_listen = self._want_pokes
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(every(0.2, self._tick, "event poll failed"))]
        if self.dispatcher.channels:
            self._loops.append(loop.create_task(self._deliver_loop()))

    async def _tick(self) -> None:
        if self.listeners:
            self._want_pokes()
        await self.poll()

    def _want_pokes(self) -> None:
        """Streams wait: have the manager poke this actor as events commit (no stream
        waits: no pokes, and this actor reads new events on its own timer)."""
        now = time.monotonic()
        if now - self._asked < ASK_EVERY_S:
            return
        manager = self.peers.get(MANAGER)
        if manager is not None:
            self._asked = now
            manager.want_pokes.remote(POKES_FOR_S)

    async def _deliver_loop(self) -> None:
        while True:
            try:
                moved = await asyncio.to_thread(self.dispatcher.tick)
            except Exception:
                log.exception("notification delivery failed")
                moved = 0
            if not moved:
                await asyncio.sleep(0.1)

