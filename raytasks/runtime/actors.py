"""The system actors: raytasks' plain classes plus the Ray wiring each one needs.

Each actor class extends (or holds) a plain class that is unit-tested without
Ray, and adds only its background loops and its handles on the other actors.
The plain class's public methods are the actor's typed API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from ray.actor import ActorHandle

from ..errors import RaytasksError
from ..manager import TaskManagerCore
from ..messages import (
    Lease,
    LeaseRequest,
    LogLine,
    ProgressReport,
    RenewAnswer,
    Report,
    ReportAnswer,
)
from ..metrics import RayQueueGauges
from ..notifications import NotificationHub
from ..notify import Dispatcher
from ..progress import ProgressTrackerCore
from ..settings import Settings
from ..store import SqlTaskStore

log = logging.getLogger(__name__)

MANAGER, TRACKER, NOTIFIER, ENGINE = "manager", "progress-tracker", "notifier", "engine"
NOTIFIER_POKE_S = 0.02
MAINTENANCE_INTERVAL_S = 60.0
SCHEDULE_TICK_S = 0.5


def get(ref: Any, timeout_s: float | None = None) -> Any:
    """``ray.get`` with an untyped result (Ray's stubs type actor-call results poorly)."""
    return ray.get(ref, timeout=timeout_s)


class Peers:
    """Handles of other system actors, looked up once (a handle survives actor restarts)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, ActorHandle] = {}

    def get(self, name: str) -> ActorHandle | None:
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = self._handles[name] = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
        return handle

    def must(self, name: str) -> ActorHandle:
        handle = self.get(name)
        if handle is None:
            raise RaytasksError(f"system actor {name!r} is not running")
        return handle


class Manager(TaskManagerCore):
    """The ``manager`` actor: reconciles on start, expires leases, prunes old events."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.on_events = self._poke_notifier
        self.on_cancel = self._cancel_on_executor
        self.peers = Peers(settings.namespace)
        self.gauges = RayQueueGauges()
        self._last_poke = 0.0
        self.recovered = self.reconcile()
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._expiry_loop()),
                       loop.create_task(self._maintenance_loop()),
                       loop.create_task(self._schedule_loop())]

    async def _expiry_loop(self) -> None:
        interval = min(0.5, self.settings.lease_ttl_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_leases()
            except Exception:
                log.exception("lease expiry failed")
            if time.monotonic() - self._last_poke > 1.0:
                # also wakes a restarted notifier, whose loops start with it
                self._poke_notifier([])
                self.gauges.update({"queues": [q.model_dump() for q in self.queue_stats()]})

    async def _schedule_loop(self) -> None:
        while True:
            await asyncio.sleep(SCHEDULE_TICK_S)
            try:
                await self.schedules.tick()
            except Exception:
                log.exception("firing schedules failed")

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            try:
                await self.prune()
            except Exception:
                log.exception("pruning failed")

    def _poke_notifier(self, _events: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        if now - self._last_poke < NOTIFIER_POKE_S:
            return  # the notifier's own poll picks these up within its interval
        self._last_poke = now
        notifier = self.peers.get(NOTIFIER)
        if notifier is not None:
            notifier.poll.remote()

    def _cancel_on_executor(self, executor_id: str, task_id: str, token: int) -> None:
        handle = self.peers.get(executor_id)
        if handle is not None:  # else a lease recovered after a restart: heartbeats tell it
            handle.cancel.remote(task_id, token)


class Tracker(ProgressTrackerCore):
    """The ``progress-tracker`` actor: renews leases with the manager, flushes progress."""

    def __init__(self, settings: Settings) -> None:
        assert settings.store_url is not None
        self.settings = settings
        self.peers = Peers(settings.namespace)
        super().__init__(SqlTaskStore(settings.store_url,
                                      busy_timeout_s=settings.store_busy_timeout_s),
                         self._renew, flush_interval_s=settings.progress_flush_interval_s)
        self._loops = [asyncio.get_running_loop().create_task(self._flush_loop())]

    async def _renew(self, leases: list[tuple[str, int]]) -> RenewAnswer:
        manager = self.peers.get(MANAGER)
        if manager is None:
            return RenewAnswer()
        answer: RenewAnswer = await manager.renew.remote(leases)
        return answer

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_flush_interval_s)
            try:
                notifier = self.peers.get(NOTIFIER)
                if await self.flush() and notifier is not None:
                    notifier.poll.remote()
            except Exception:
                log.exception("progress flush failed")

    def ready(self) -> bool:
        return True


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
        self._loops = [loop.create_task(self._poll_loop())]
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

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                await self.poll()
            except Exception:
                log.exception("event poll failed")


class RayLink:
    """An executor's blocking calls on the manager and the tracker."""

    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    def report_and_lease(self, request: LeaseRequest) -> list[Lease]:
        leases: list[Lease] = get(self.peers.must(MANAGER).report_and_lease.remote(request),
                                  60)
        return leases

    def report(self, reports: list[Report]) -> ReportAnswer:
        answer: ReportAnswer = get(self.peers.must(MANAGER).report.remote(reports), 60)
        return answer

    def heartbeat(self, executor_id: str, leases: list[tuple[str, int]],
                  progress: list[ProgressReport], logs: list[LogLine]) -> RenewAnswer:
        answer: RenewAnswer = get(self.peers.must(TRACKER).heartbeat.remote(
            executor_id, leases, progress, logs), 60)
        return answer

    def checkpoint(self, task_id: str) -> Any:
        return get(self.peers.must(MANAGER).checkpoint.remote(task_id), 60)

    def save_checkpoint(self, task_id: str, token: int, state: Any) -> bool:
        saved: bool = get(self.peers.must(MANAGER).save_checkpoint.remote(task_id, token,
                                                                          state), 60)
        return saved

    def type_blob(self, name: str) -> bytes:
        blob: bytes = get(self.peers.must(MANAGER).type_blob.remote(name), 60)
        return blob
