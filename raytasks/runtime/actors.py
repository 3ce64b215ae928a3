"""What the system actors share: their role names, handles on each other, an executor's link.

Each actor class (:mod:`.manager`, :mod:`.tracker`, :mod:`.notifier`,
:mod:`.engine`) extends or holds a plain class that is unit-tested without Ray,
and adds only its background loops and its handles on the other actors; the
plain class's public methods are the actor's typed API. Each lives in a module
of its own so that its process imports only what it uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from ray.actor import ActorHandle

from ..errors import RaytasksError
from ..messages import (
    LeaseRequest,
    LogLine,
    ProgressReport,
    RenewAnswer,
    Report,
    ReportAnswer,
    Work,
)

log = logging.getLogger(__name__)

MANAGER, TRACKER, NOTIFIER, ENGINE = "manager", "progress-tracker", "notifier", "engine"


def get(ref: Any, timeout_s: float | None = None) -> Any:
    """``ray.get`` with an untyped result (Ray's stubs type actor-call results poorly)."""
    return ray.get(ref, timeout=timeout_s)


async def every(interval_s: float, step: Callable[[], Awaitable[object]],
                failure: str) -> None:
    """An actor's background loop: ``step`` every ``interval_s``, for the actor's life. A
    failed step is logged as ``failure`` and the loop goes on."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except Exception:
            log.exception(failure)


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


class RayLink:
    """An executor's blocking calls on the manager and the tracker."""

    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    def report_and_lease(self, request: LeaseRequest) -> Work:
        work: Work = get(self.peers.must(MANAGER).report_and_lease.remote(request), 60)
        return work

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
