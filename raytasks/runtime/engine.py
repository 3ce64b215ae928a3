"""The ``engine`` actor: one executor pool per task type, sized by that type's queue.

A type's pool holds between ``min_workers`` and ``max_workers`` executors
(``workers`` fixes both). Every ``autoscale_interval_s`` the engine reads the
manager's queue stats; a type's demand is its ready plus its running tasks,
plus ``warm_workers`` idle ones kept ready for the next burst (capped by its
concurrency limit). A pool below its demand grows at once; a pool above it for
``idle_timeout_s`` retires idle executors, never its warm ones. Retiring is
graceful: the executor stops leasing, reports what it ran, and only then is
its process ended, so no lease is ever cut off.

Executors ask Ray for their type's CPUs and custom resources (``{"trainer": 1}``),
so an executor no node can hold stays pending, and a pending actor is exactly
the demand Ray's autoscaler answers by adding a node. When the pool shrinks,
the node goes idle and the autoscaler removes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle

from ..executor import TaskExecutor
from ..messages import Lease, LeaseRequest, Wire, Work
from ..models import QueueStats
from ..settings import Settings
from . import drains
from .actors import MANAGER, Peers, RayLink
from .oom import death_cause, record_path

log = logging.getLogger(__name__)

ADOPT_SCAN = 64  # executor indices probed per type when a restarted engine adopts its pools


@dataclass(frozen=True)
class PoolBounds:
    """How small and how large a type's pool may be, how soon it shrinks, and how many
    idle executors it keeps ready above its busy ones (``warm``, at most ``high``)."""

    low: int
    high: int
    idle_timeout_s: float
    warm: int = 0

    @classmethod
    def of(cls, settings: Settings, task_type: str, workers: int | None = None) -> PoolBounds:
        """The settings' bounds of ``task_type``; ``workers`` fixes the size instead."""
        own = settings.for_type(task_type)
        assert own.min_workers is not None and own.max_workers is not None
        idle = own.idle_timeout_s or settings.idle_timeout_s
        if workers is not None:
            return cls(workers, workers, idle)
        low, high = own.min_workers, own.max_workers
        # a fixed size has no headroom to keep
        warm = min(own.warm_workers or 0, high) if high > low else 0
        return cls(low, high, idle, warm)

    def floor(self) -> int:
        """The size of the pool without work: its minimum, or its warm executors."""
        return min(max(self.low, self.warm), self.high)


class PoolSizer:
    """The size each pool should have now. Pure: the caller passes ``now``.

    Growth is immediate (queued work should not wait); shrinking waits until the
    pool has been larger than its demand for the whole idle timeout, so a
    bursty queue keeps its executors. ``demand`` counts the warm headroom
    already (:func:`with_warm`).
    """

    def __init__(self) -> None:
        self._surplus_since: dict[str, float] = {}

    def target(self, task_type: str, bounds: PoolBounds, size: int, demand: int,
               now: float) -> int:
        want = min(max(demand, bounds.low), bounds.high)
        if want >= size:
            self._surplus_since.pop(task_type, None)
            return want
        since = self._surplus_since.setdefault(task_type, now)
        if now - since < bounds.idle_timeout_s:
            return size
        del self._surplus_since[task_type]  # the next shrink waits a full timeout again
        return want


async def _within(ref: Any, timeout_s: float) -> Any:
    return await asyncio.wait_for(ref, timeout_s)


def demand_by_type(stats: list[QueueStats], limits: dict[str, int | None]) -> dict[str, int]:
    """Ready plus running tasks per type, over every queue, capped by each type's limit."""
    demand: dict[str, int] = {}
    for queue in stats:
        for counts in (queue.waiting_by_type, queue.leased_by_type):
            for task_type, n in counts.items():
                demand[task_type] = demand.get(task_type, 0) + n
    return {t: n if limits.get(t) is None else min(n, limits[t] or 0)
            for t, n in demand.items()}


def with_warm(demand: int, bounds: PoolBounds, limit: int | None) -> int:
    """A type's demand plus its warm headroom: idle executors beyond what the type's
    concurrency ``limit`` lets run at once would never get work, so none are kept."""
    wanted = demand + bounds.warm
    return wanted if limit is None else max(demand, min(wanted, limit))


class _RetiringLink:
    """An executor's link that, once retiring, reports what it ran and leases nothing more."""

    def __init__(self, inner: RayLink) -> None:
        self.inner = inner
        self.retiring = threading.Event()
        self.drained = threading.Event()
        self.on_drained: Any = None

    def report_and_lease(self, request: LeaseRequest) -> Work:
        if not self.retiring.is_set():
            return self.inner.report_and_lease(request)
        if request.reports:
            self.inner.report(request.reports)
        self.drained.set()
        if self.on_drained is not None:
            self.on_drained()  # the work loop ends before it asks again
        return Work()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PooledExecutor:
    """An ``executor:<type>:<i>`` actor: one process running one type's handlers.

    ``retire()`` asks it to finish what it holds and lease no more; the engine
    ends the process once ``retire()`` answers that it is drained.
    """

    def __init__(self, executor_id: str, task_type: str, settings: Settings,
                 bounds: PoolBounds) -> None:
        self.bounds = bounds
        self.link = _RetiringLink(RayLink(Peers(settings.namespace)))
        self.core = TaskExecutor(executor_id, task_type, settings, self.link,
                                 record=record_path(settings.namespace, executor_id),
                                 death_cause=death_cause)
        self.link.on_drained = self.core.stop

    def cancel(self, task_id: str, token: int) -> bool:
        return self.core.cancel(task_id, token)

    def preempt(self, task_id: str, token: int, grace_s: float) -> bool:
        return self.core.preempt(task_id, token, grace_s)

    def end_loan(self, loan_id: str) -> None:
        self.core.end_loan(loan_id)

    def run_lent(self, loan_id: str, lease: Wire) -> tuple[bool, Wire | None]:
        """A lone task of the client this executor is lent to (:meth:`TaskExecutor.run_lent`);
        the lease and the report go as plain lists (``Lease.wire``, ``Report.wire``)."""
        taken, report = self.core.run_lent(loan_id, Lease(*lease))
        return taken, None if report is None else report.wire()

    def state(self) -> dict[str, Any]:
        return {**self.core.state(), "node_id": ray.get_runtime_context().get_node_id(),
                "retiring": self.link.retiring.is_set()}

    def pool_bounds(self) -> PoolBounds:
        return self.bounds

    def retire(self) -> bool:
        """Stop leasing and end a loan (idempotent). True once everything it ran is
        reported and no loan or lent run is under way."""
        self.link.retiring.set()
        self.core.end_loan()
        return self.link.drained.is_set() and not self.core.busy()


@dataclass
class Pool:
    """One type's executors by index, with the calls that tell when each is placed."""

    task_type: str
    bounds: PoolBounds
    live: dict[int, ActorHandle] = field(default_factory=dict)
    placed: dict[int, Any] = field(default_factory=dict)  # index -> ref of a first call
    retiring: dict[int, ActorHandle] = field(default_factory=dict)

    def free_index(self) -> int:
        i = 0
        while i in self.live or i in self.retiring:
            i += 1
        return i


class Engine:
    """The ``engine`` actor: keeps one pool of executor actors per task type, sized by demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pools: dict[str, Pool] = {}
        self.sizer = PoolSizer()
        self.peers = Peers(settings.namespace)
        self.scaled: list[dict[str, Any]] = []  # the latest resizes, for stats and tests
        self._adopt_existing()
        self._loop = asyncio.get_running_loop().create_task(self._scale_loop())

    def _adopt_existing(self) -> None:
        """After a restart, take back the executors that outlived the old engine (by name)."""
        manager = self.peers.get(MANAGER)
        if manager is None:
            return
        try:
            types: list[Any] = ray.get(manager.types.remote(), timeout=30)
        except Exception:  # the manager is starting too: the scale loop finds demand later
            return
        named = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == self.settings.namespace}  # one call, not one per index
        for info in types:
            found: dict[int, ActorHandle] = {}
            for i in range(ADOPT_SCAN):
                name = self._name(info.name, i)
                if name not in named:
                    continue
                try:
                    found[i] = ray.get_actor(name, namespace=self.settings.namespace)
                except ValueError:  # it ended since the listing
                    continue
            if not found:
                bounds = PoolBounds.of(self.settings, info.name)
                if bounds.floor():  # its minimum or warm executors: the scale loop starts them
                    self.pools[info.name] = Pool(info.name, bounds)
                continue
            try:  # the pool's bounds travel with its executors (a fixed size given at
                # registration is in no settings)
                bounds = ray.get(next(iter(found.values())).pool_bounds.remote(), timeout=10)
            except Exception:
                bounds = PoolBounds.of(self.settings, info.name)
            pool = self.pools[info.name] = Pool(info.name, bounds, found)
            pool.placed = {i: h.state.remote() for i, h in found.items()}

    def _name(self, task_type: str, index: int) -> str:
        return f"executor:{task_type}:{index}"

    # ------------------------------------------------------------------ actor API

    async def ensure_pool(self, task_type: str, workers: int | None = None) -> int:
        """Size ``task_type``'s pool by the settings, or fix it at ``workers``; start its
        minimum now. Returns the number of executors."""
        bounds = PoolBounds.of(self.settings, task_type, workers)
        pool = self.pools.get(task_type)
        if pool is None:
            pool = self.pools[task_type] = Pool(task_type, bounds)
        pool.bounds = bounds
        # a new pool starts warm: the first burst need not wait for a worker process
        self._resize(pool, max(bounds.floor(), min(len(pool.live), bounds.high)))
        return len(pool.live)

    async def ensure_pools(self, task_types: list[str]) -> dict[str, int]:
        return {t: await self.ensure_pool(t) for t in task_types}

    async def stats(self) -> list[dict[str, Any]]:
        """Each live executor's state; one not placed on a node yet (or restarting) shows
        an ``error`` instead."""
        names = [(t, i, h) for t, pool in self.pools.items() for i, h in sorted(pool.live.items())]
        states = await asyncio.gather(*(_within(h.state.remote(), 3.0) for _, _, h in names),
                                      return_exceptions=True)
        return [state if isinstance(state, dict) else
                {"executor_id": self._name(t, i), "task_type": t,
                 "error": type(state).__name__}
                for (t, i, _), state in zip(names, states, strict=True)]

    async def pools_info(self) -> dict[str, dict[str, Any]]:
        """Per type: bounds, live, placed (answering), starting (live, not placed yet:
        a process starting or waiting for a node) and retiring executors, and the latest
        resizes."""
        info: dict[str, dict[str, Any]] = {}
        for t, p in self.pools.items():
            placed = sum(1 for i in list(p.live) if self._placed(p, i))
            info[t] = {"min": p.bounds.low, "max": p.bounds.high, "warm": p.bounds.warm,
                       "idle_timeout_s": p.bounds.idle_timeout_s, "live": len(p.live),
                       "placed": placed, "starting": len(p.live) - placed,
                       "retiring": len(p.retiring),
                       "resizes": [r for r in self.scaled if r["task_type"] == t]}
        return info

    async def shutdown(self) -> int:
        self._loop.cancel()
        count = 0
        for pool in self.pools.values():
            for handle in [*pool.live.values(), *pool.retiring.values()]:
                ray.kill(handle, no_restart=True)
                count += 1
        self.pools.clear()
        return count

    # ------------------------------------------------------------------ scaling

    async def _scale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.autoscale_interval_s)
            try:
                await self.scale_once()
            except Exception:
                log.exception("pool scaling failed")

    async def scale_once(self, now: float | None = None) -> None:
        """Read the demand once, grow or shrink every pool, end drained executors."""
        manager = self.peers.get(MANAGER)
        if manager is None:
            return
        stats: list[QueueStats] = await asyncio.wait_for(manager.queue_stats.remote(), 10)
        for task_type in self._types_with_work(stats):
            if task_type not in self.pools:  # a type this (restarted) engine has not seen
                self.pools[task_type] = Pool(task_type, PoolBounds.of(self.settings, task_type))
        await self._leave_draining(manager)
        limits = {t: self.settings.for_type(t).max_concurrency for t in self.pools}
        demand = demand_by_type(stats, limits)
        now = time.monotonic() if now is None else now
        for pool in self.pools.values():
            size = len(pool.live)
            wanted = with_warm(demand.get(pool.task_type, 0), pool.bounds,
                               limits.get(pool.task_type))
            target = self.sizer.target(pool.task_type, pool.bounds, size, wanted, now)
            if target > size:
                self._resize(pool, target)
            elif target < size:
                await self._retire_idle(pool, size - target)
            await self._end_drained(pool)

    async def _leave_draining(self, manager: ActorHandle) -> None:
        """Retire the executors on nodes Ray is draining, and have the manager hand back
        what they run before each node's deadline (:mod:`.drains`); the pools then grow
        again on other nodes. Repeated every round while a node drains: a lease granted
        as an executor was retired is handed back the next."""
        try:
            draining = await asyncio.to_thread(drains.draining_nodes)
        except Exception:
            log.exception("reading the draining nodes failed")
            return
        if not draining:
            return
        handles: dict[str, tuple[Pool, int, ActorHandle]] = {}
        for pool in self.pools.values():
            for index, handle in [*pool.live.items(), *pool.retiring.items()]:
                if index in pool.retiring or self._placed(pool, index):
                    handles[self._name(pool.task_type, index)] = (pool, index, handle)
        found = await drains.on_nodes({n: h for n, (_p, _i, h) in handles.items()},
                                      set(draining))
        for name in found:
            pool, index, handle = handles[name]
            if index in pool.live:
                pool.retiring[index] = pool.live.pop(index)
                pool.placed.pop(index, None)
                self._record(pool, "drain", 1)
            handle.retire.remote()
        for node in set(found.values()):
            names = [n for n, on in found.items() if on == node]
            await _within(manager.hand_back.remote(names, draining[node]), 10)

    def _types_with_work(self, stats: list[QueueStats]) -> set[str]:
        return {t for q in stats for t, n in q.waiting_by_type.items() if n > 0}

    def _resize(self, pool: Pool, size: int) -> None:
        """Grow ``pool`` to ``size`` executors (new ones start; Ray places them when it can)."""
        own = self.settings.for_type(pool.task_type)
        remote_executor: Any = ray.remote(PooledExecutor)
        grew = 0
        while len(pool.live) < size:
            index = pool.free_index()
            name = self._name(pool.task_type, index)
            handle = remote_executor.options(
                name=name, namespace=self.settings.namespace, lifetime="detached",
                get_if_exists=True, max_restarts=-1, max_task_retries=0,
                max_concurrency=4, num_cpus=own.num_cpus, resources=own.resources or None,
            ).remote(name, pool.task_type, self.settings, pool.bounds)
            pool.live[index] = handle
            pool.placed[index] = handle.state.remote()
            grew += 1
        if grew:
            self._record(pool, "grow", grew)

    def _placed(self, pool: Pool, index: int) -> bool:
        ref = pool.placed.get(index)
        if ref is None:
            return True
        ready, _ = ray.wait([ref], timeout=0)
        if ready:
            pool.placed.pop(index, None)
        return bool(ready)

    async def _retire_idle(self, pool: Pool, count: int) -> None:
        """Retire up to ``count`` executors that hold nothing, newest first, keeping
        ``warm`` of them idle (so never below busy + warm).

        One still waiting for a node holds nothing and is ended first, at once (the
        autoscaler then drops the demand it stood for).
        """
        indices = sorted(pool.live, reverse=True)
        unplaced = [i for i in indices if not self._placed(pool, i)]
        placed = [i for i in indices if i not in unplaced]
        states = await asyncio.gather(*(_within(pool.live[i].state.remote(), 5)
                                        for i in placed), return_exceptions=True)
        idle = [i for i, state in zip(placed, states, strict=True)
                if isinstance(state, dict) and self._idle(pool, state)]
        # busy ones are what a queue or a loan uses; the warm headroom stays above them
        count = min(count, len(unplaced) + len(idle) - pool.bounds.warm)
        chosen: list[int] = []
        for index in unplaced[:max(0, count)]:
            ray.kill(pool.live.pop(index), no_restart=True)
            pool.placed.pop(index, None)
            chosen.append(index)
        for index in idle[:max(0, count - len(chosen))]:
            pool.retiring[index] = pool.live.pop(index)
            pool.retiring[index].retire.remote()
            chosen.append(index)
        if chosen:
            self._record(pool, "shrink", len(chosen))

    @staticmethod
    def _idle(pool: Pool, state: dict[str, Any]) -> bool:
        """Whether an executor holds nothing: no task, no lease, no loan."""
        # one lent to a client lately is in use, though no queue shows it
        recent = time.time() - state.get("lent_at", 0.0) < pool.bounds.idle_timeout_s
        return state.get("current") is None and not state.get("held") and not recent \
            and not state.get("lent")

    async def _end_drained(self, pool: Pool) -> None:
        for index, handle in list(pool.retiring.items()):
            try:
                drained: bool = await _within(handle.retire.remote(), 5)
            except Exception:
                continue  # busy finishing a task, or restarting: asked again next round
            if drained:
                ray.kill(handle, no_restart=True)
                del pool.retiring[index]

    def _record(self, pool: Pool, action: str, count: int) -> None:
        self.scaled.append({"task_type": pool.task_type, "action": action, "count": count,
                            "size": len(pool.live), "at": time.time()})
        del self.scaled[:-200]
        log.info("pool %s: %s by %d to %d", pool.task_type, action, count, len(pool.live))
