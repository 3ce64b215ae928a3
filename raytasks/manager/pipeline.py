"""CommitPipeline: plan, commit, then apply — every change to the manager's state.

Callers hand in *plans*: functions that read memory (never change it) and
return the rows to write plus an ``apply`` step. The pipeline runs rounds: it
plans every operation that is waiting, commits all their rows in one
transaction on a worker thread (the event loop never blocks on I/O), and only
then applies each plan to memory, in order. While a round commits, new
operations wait and form the next round, so a busy manager commits in batches
and an idle one commits each operation at once.

- A plan that touches a task another plan of the round already changes is
  deferred to the next round (:class:`Conflict`), so plans never contradict.
- When a round's commit fails, nothing was applied: its operations are retried
  one per round, so one caller's bad row fails only that caller.
- When a guarded update finds the store ahead of memory (:class:`StaleWriteError`),
  the tasks are reloaded and the operation is planned once more.
- When the store is away or full (:class:`StoreUnavailableError`,
  :class:`StoreFullError`), every operation of the round fails with that error at once
  (no retry alone: it is not a row's fault), ``away_since`` says since when, and the
  first commit that succeeds again calls ``on_back`` with how long it was away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc as sa_exc

from ..errors import RaytasksError, StoreError, StoreFullError, StoreUnavailableError
from ..store.base import StaleWriteError, WriteBatch

log = logging.getLogger(__name__)


class Conflict(Exception):
    """The plan touches a task already changed in this round: plan it next round."""


class DuplicateKeyError(StoreError):
    """An insert collided with a stored id or idempotency key."""


@dataclass
class Round:
    """What the plans of one round have claimed so far (none of it applied yet)."""

    now: float
    touched: set[str] = field(default_factory=set)
    leased: set[str] = field(default_factory=set)
    queued: Counter[str] = field(default_factory=Counter)
    pending: Counter[str | None] = field(default_factory=Counter)
    running: Counter[str | None] = field(default_factory=Counter)
    running_by_type: Counter[tuple[str | None, str]] = field(default_factory=Counter)
    starts: Counter[str] = field(default_factory=Counter)
    keys: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: how far this round's lease plans have scanned each lane (see TaskScheduler._head)
    scanned: dict[int, int] = field(default_factory=dict)

    def claim(self, task_ids: Iterable[str]) -> None:
        """Reserve tasks for one plan; raises :class:`Conflict` if another plan has one."""
        ids = set(task_ids)
        if ids & self.touched:
            raise Conflict()
        self.touched |= ids


@dataclass
class Plan:
    """One operation's share of a round: rows to commit, then what to do in memory.

    ``apply`` gets the ids the store gave this plan's events and returns the
    operation's answer.
    """

    batch: WriteBatch = field(default_factory=WriteBatch)
    apply: Callable[[list[int]], Any] = lambda _ids: None


Planner = Callable[[Round], Plan]


@dataclass
class _Op:
    planner: Planner
    future: asyncio.Future[Any] | None
    solo: bool = False
    resynced: bool = False


class CommitPipeline:
    """Runs plans in rounds; ``commit`` runs on a worker thread, ``apply`` on the loop."""

    def __init__(self, commit: Callable[[WriteBatch], list[int]], clock: Callable[[], float],
                 *, resync: Callable[[list[str]], None] = lambda _ids: None,
                 max_ops: int = 1024) -> None:
        self._commit = commit
        self._clock = clock
        self._resync = resync
        self._max_ops = max_ops
        self._ops: deque[_Op] = deque()
        self._busy = False
        self._runner: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raytasks-store")
        self.rounds = 0
        self.commits = 0
        self.commit_s = 0.0  # time in the store's commit (on the thread)
        self.wait_s = 0.0  # time from handing a commit to the thread until its result
        #: when (``clock``) a commit first failed because the store was away or full;
        #: None while commits succeed
        self.away_since: float | None = None
        #: called (on the loop) with the seconds the store was away, when a commit
        #: succeeds again, before the round's changes are applied
        self.on_back: Callable[[float], None] = lambda _away_s: None
        #: operations nobody waits for that failed while the store was away: run again
        #: when it is back (a dependent's end must not be lost to an outage)
        self._parked: list[_Op] = []

    async def run(self, planner: Planner, *, solo: bool = False) -> Any:
        """Plan, commit and apply one operation; its answer, or the error it raised.

        On an idle pipeline the caller runs the round itself (no hand-off to another
        task); operations that arrive meanwhile are drained by a task of their own.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ops.append(_Op(planner, future, solo))
        if not self._busy:
            self._busy = True
            try:
                while self._ops and not future.done():
                    await self._safe_round()
            finally:
                self._hand_over()
        return await future

    def submit(self, planner: Planner) -> None:
        """Queue an operation nobody waits for (a follow-up decided while applying)."""
        self._ops.append(_Op(planner, None))
        if not self._busy:
            self._busy = True
            self._hand_over()

    def _hand_over(self) -> None:
        """Operations are left: a task drains them; none: the pipeline is idle again."""
        if self._ops:
            self._runner = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False

    async def _drain(self) -> None:
        try:
            while self._ops:
                await self._safe_round()
        finally:
            self._busy = False
            if self._ops:  # cancelled mid-way: never strand an operation
                self._busy = True
                self._hand_over()

    async def _safe_round(self) -> None:
        try:
            await self._round()
        except Exception:  # a bug; never let the pipeline die
            log.exception("commit round failed")

    def _take(self) -> list[_Op]:
        if self._ops[0].solo:
            return [self._ops.popleft()]
        ops: list[_Op] = []
        while self._ops and not self._ops[0].solo and len(ops) < self._max_ops:
            ops.append(self._ops.popleft())
        return ops

    async def _round(self) -> None:
        ops = self._take()
        self.rounds += 1
        ctx = Round(now=self._clock())
        planned: list[tuple[_Op, Plan]] = []
        deferred: list[_Op] = []
        for op in ops:
            try:
                planned.append((op, op.planner(ctx)))
            except Conflict:
                deferred.append(op)
            except Exception as exc:
                _settle(op, exc=exc)
        self._ops.extendleft(reversed(deferred))
        batch = WriteBatch()
        for _, plan in planned:
            batch.extend(plan.batch)
        try:
            ids = await self._commit_off_loop(batch) if batch else []
        except Exception as exc:
            self._failed(planned, exc)
            return
        if batch:
            self.back()
        offset = 0
        for op, plan in planned:
            n = len(plan.batch.events)
            try:
                _settle(op, value=plan.apply(ids[offset:offset + n]))
            except Exception as exc:
                log.exception("applying a committed change failed")
                _settle(op, exc=exc)
            offset += n

    async def _commit_off_loop(self, batch: WriteBatch) -> list[int]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        ids = await loop.run_in_executor(self._thread, self._timed_commit, batch)
        self.wait_s += time.perf_counter() - started
        self.commits += 1
        return ids

    def _timed_commit(self, batch: WriteBatch) -> list[int]:
        started = time.perf_counter()
        try:
            return self._commit(batch)
        finally:
            self.commit_s += time.perf_counter() - started

    def away(self, exc: StoreUnavailableError | StoreFullError) -> None:
        """The store refused a change for a fault of its own (not a row's)."""
        if self.away_since is None:
            self.away_since = self._clock()
            log.warning("the store is away: %s", exc)

    def back(self) -> None:
        """The store took a change (or answered a probe): tell ``on_back`` once."""
        if self.away_since is not None:
            away_s, self.away_since = max(0.0, self._clock() - self.away_since), None
            log.warning("the store is back after %.1f s", away_s)
            self.on_back(away_s)
        if self._parked:
            self._ops.extend(self._parked)
            self._parked = []
            if not self._busy:
                self._busy = True
                self._hand_over()

    def _failed(self, planned: list[tuple[_Op, Plan]], exc: Exception) -> None:
        """Nothing was applied. Retry each operation alone, or fail the one that failed;
        a store away or full fails them all at once (the same error each)."""
        if isinstance(exc, StoreUnavailableError | StoreFullError):
            self.away(exc)
            for op, _ in planned:
                if op.future is None:
                    self._parked.append(op)
                else:
                    _settle(op, exc=exc)
            return
        if len(planned) > 1:
            for op, _ in reversed(planned):
                op.solo = True
                self._ops.appendleft(op)
            return
        if not planned:
            return
        op = planned[0][0]
        if isinstance(exc, StaleWriteError) and not op.resynced:
            self._resync(exc.task_ids)
            op.resynced = True
            self._ops.appendleft(op)
            return
        _settle(op, exc=_as_store_error(exc))

    def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        self._thread.shutdown(wait=False)


def _as_store_error(exc: Exception) -> Exception:
    if isinstance(exc, RaytasksError):
        return exc
    if isinstance(exc, sa_exc.IntegrityError):
        return DuplicateKeyError(f"the store refused a duplicate: {exc.orig}")
    log.warning("store commit failed: %s", exc)
    return StoreError(f"the store refused the change ({type(exc).__name__}); try again")


def _settle(op: _Op, *, value: Any = None, exc: BaseException | None = None) -> None:
    if op.future is None:
        if exc is not None and not isinstance(exc, RaytasksError):
            log.error("a background change failed: %s", exc)
        return
    if op.future.done():
        return
    if exc is not None:
        op.future.set_exception(exc)
    else:
        op.future.set_result(value)
