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
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from ..errors import RaytasksError
from ..messages import (
    Lease,
    LeaseRequest,
    LogLine,
    ProgressReport,
    RenewAnswer,
    Report,
    ReportAnswer,
    Work,
)
from .calls import ManagerCalls

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

    def ledger(self, lease: Lease) -> ManagerLedger:
        """Where the attempt under ``lease`` records and reads model digests."""
        return ManagerLedger(self.peers.namespace, lease.task_id, lease.token)

    def type_blob(self, name: str) -> bytes:
        blob: bytes = get(self.peers.must(MANAGER).type_blob.remote(name), 60)
        return blob


@dataclass(frozen=True)
class ManagerLedger:
    """Model digests kept in the store through the manager, under one attempt's lease (a
    :class:`~raytasks.quant.model_registry.ModelLedger`; picklable, so it goes with a
    handler's Ray tasks)."""

    namespace: str
    task_id: str
    token: int

    def _manager(self) -> ManagerCalls:
        return ManagerCalls(ray.get_actor(MANAGER, namespace=self.namespace))

    def record(self, registry: str, model_id: str, sha256: str) -> None:
        if not self._manager().record_model(self.task_id, self.token, registry, model_id,
                                            sha256).result(60):
            raise ValueError(f"model {model_id!r} is not recorded: this attempt no longer "
                             "holds its task's lease")

    def digest(self, registry: str, model_id: str) -> str | None:
        return self._manager().model_digest(self.task_id, registry, model_id).result(60)
