"""The ``manager`` actor: the task manager's core plus its timers."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import time
from typing import Any

import ray

from ..manager import TaskManagerCore
from ..settings import Settings
from .actors import ENGINE, NOTIFIER, Peers, every
from .metrics import RayQueueGauges

log = logging.getLogger(__name__)

NOTIFIER_POKE_S = 0.02
#: How often retention prunes (and the heap is handed back): often, so each prune deletes
#: few rows (a minute's worth raised the manager's RSS by ~15 MB at each prune at 1,000
#: tasks/s), and the store holds little past the retention.
MAINTENANCE_INTERVAL_S = 10.0
SCHEDULE_TICK_S = 0.5
#: How often the intake is read for tasks whose client's notice never came (a task is
#: adopted on the second sweep that finds it).
INTAKE_SWEEP_S = 1.0
#: How often the write-ahead log is checkpointed (SQLite), off the commit path.
WAL_CHECKPOINT_S = 1.0
#: How often the scheduler looks for deadlines that need a running attempt preempted.
PREEMPT_TICK_S = 0.5


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def give_back_heap() -> None:
    """Hand the C heap's free pages back to the system. Rows read and deleted by retention
    leave the allocator holding its busiest prune's high-water mark, which a long-running
    manager's RSS would otherwise keep (``raytasks bench endurance``, with 10 s prunes: 257 MB
    at the millionth task, against 301 MB with neither). Returns at once where there is no
    ``malloc_trim``."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class Manager(TaskManagerCore):
    """The ``manager`` actor: reconciles on start, expires leases, prunes old events."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.parts.on_events = self._poke_notifier
        self.parts.on_cancel = self._cancel_on_executor
        self.parts.on_preempt = self._preempt_on_executor
        self.peers = Peers(settings.namespace)
        self.starting = self._executors_starting
        self.gauges = RayQueueGauges()
        self._last_poke = 0.0
        self._pokes_until = 0.0
        self.adoption.node_id = ray.get_runtime_context().get_node_id()
        self.recovered = self.reconcile()
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._expiry_loop()),
                       loop.create_task(every(MAINTENANCE_INTERVAL_S, self._maintain,
                                              "pruning failed")),
                       loop.create_task(every(SCHEDULE_TICK_S, self.schedules.tick,
                                              "firing schedules failed")),
                       loop.create_task(every(WAL_CHECKPOINT_S, self._checkpoint_wal,
                                              "checkpointing the store failed")),
                       loop.create_task(every(INTAKE_SWEEP_S, self.sweep_intake,
                                              "sweeping the intake failed")),
                       loop.create_task(every(PREEMPT_TICK_S, self._preempt,
                                              "preempting for deadlines failed"))]

    async def _maintain(self) -> None:
        pruned = await self.prune()
        if any(pruned.values()):  # off the loop: it holds the allocator's lock, not the GIL
            await asyncio.to_thread(give_back_heap)

    async def _preempt(self) -> None:
        self.preempt()

    async def _checkpoint_wal(self) -> None:
        await asyncio.to_thread(self.store.checkpoint_wal)

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
                self._poke()
                self.gauges.update({"queues": [q.model_dump() for q in self.queue_stats()]})

    def want_pokes(self, seconds: float) -> None:
        """The notifier has streams waiting: poke it as events commit, for ``seconds``."""
        self._pokes_until = time.monotonic() + min(seconds, 60.0)

    def _poke_notifier(self, _events: list[dict[str, Any]]) -> None:
        """Events committed: poke the notifier while its streams wait (at most every
        ``NOTIFIER_POKE_S``); else its own poll picks them up within its interval."""
        now = time.monotonic()
        if now < self._pokes_until and now - self._last_poke >= NOTIFIER_POKE_S:
            self._poke()

    def _poke(self) -> None:
        self._last_poke = time.monotonic()
        notifier = self.peers.get(NOTIFIER)
        if notifier is not None:
            notifier.poll.remote()

    async def _executors_starting(self, task_type: str) -> int:
        """Executors of ``task_type`` the engine started that are not placed yet (waiting
        for a node, or starting): what explains a wait for an executor."""
        engine = self.peers.get(ENGINE)
        if engine is None:
            return 0
        try:
            pools: dict[str, Any] = await asyncio.wait_for(engine.pools_info.remote(), 5)
        except Exception:  # the engine is restarting: nothing to tell
            return 0
        pool = pools.get(task_type, {})
        return max(0, int(pool.get("live", 0)) - int(pool.get("placed", 0)))

    def _preempt_on_executor(self, executor_id: str, task_id: str, token: int,
                             grace_s: float) -> None:
        handle = self.peers.get(executor_id)
        if handle is not None:  # else its heartbeats tell it
            handle.preempt.remote(task_id, token, grace_s)

    async def end_loans(self, loans: list[tuple[str, str]]) -> None:
        handles = [(self.peers.get(executor_id), loan_id) for executor_id, loan_id in loans]
        calls: list[Any] = [asyncio.wait_for(h.end_loan.remote(loan_id), 5)
                 for h, loan_id in handles if h is not None]
        await asyncio.gather(*calls, return_exceptions=True)  # one gone: its loan too

    def _cancel_on_executor(self, executor_id: str, task_id: str, token: int) -> None:
        handle = self.peers.get(executor_id)
        if handle is not None:  # else a lease recovered after a restart: heartbeats tell it
            handle.cancel.remote(task_id, token)
