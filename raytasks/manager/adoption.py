"""Adoption: the manager's memory follows tasks that clients wrote to the store themselves.

A client may commit its own plain submits (PENDING) and its lent runs (RUNNING under
their first lease, then their completion), as River and Oban clients insert jobs. Each
such task has a row in the intake table until the manager adopts it. The manager adopts
a task by claiming that row (``DELETE … RETURNING``), so a task is adopted exactly once,
by whichever comes first:

- :meth:`Adoption.ensure_adopted`, at the manager's boundary: every call that names a task
  (a wait, a cancel, a dependency, an executor's heartbeat or report) adopts it first if
  the store has it PENDING or RUNNING and memory does not;
- :meth:`Adoption.adopt`, a client's notice of what it wrote (a hint: it makes the tasks
  run sooner and their ends known sooner), which also learns the ends of lent runs the
  manager holds;
- :meth:`Adoption.sweep`, which adopts what no notice brought (the client died).

Correctness never rests on which comes first, nor when. The room a client may fill is
granted here too (:meth:`Adoption.grant`), so a full queue refuses work whichever way it
comes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..errors import StoreError
from ..messages import IntakeGrant
from ..models import TaskStatus
from ..store.base import ActiveRow
from .parts import Parts
from .pipeline import Planner
from .state import Entry, kind_of

log = logging.getLogger(__name__)

#: what arms a PENDING task: blocks it on its dependencies, or queues it
Arm = Callable[[Entry, list[str], dict[str, TaskStatus]], None]
#: the plan that ends held RUNNING tasks the store shows ended (``Changes.ended``)
Ended = Callable[[dict[str, TaskStatus]], Planner]
States = dict[str, tuple[TaskStatus, str | None]]
#: a finished run: (type, parameters JSON, work units, seconds)
Run = tuple[str, str, int | None, float]


class Adoption:
    """Tasks written outside the manager, taken into memory exactly once."""

    def __init__(self, parts: Parts, arm: Arm, ended: Ended) -> None:
        self.parts = parts
        self._arm = arm
        self._ended = ended
        self._adopting: dict[str, asyncio.Future[None]] = {}  # claims in flight, by task
        self._seen: set[str] = set()  # intake rows the last sweep found
        self.node_id: str | None = None  # the Ray node the manager runs on (the actor sets it)
        #: tasks whose claim failed for the store (away, or its answer lost): the claim
        #: may have committed, so no intake row would bring them again; the sweep reads them
        self._unsure: set[str] = set()

    async def ensure_adopted(self, task_ids: Iterable[str]) -> States:
        """Adopt those of ``task_ids`` the store has PENDING or RUNNING and memory does not.

        Returns the stored states of the ids memory did not hold (read before adopting;
        ids the store does not have are absent). Costs nothing for ids memory holds.
        """
        unknown = [t for t in dict.fromkeys(task_ids) if t not in self.parts.active]
        if not unknown:
            return {}
        states: States = await asyncio.to_thread(self.parts.store.states, unknown)
        live = [t for t, (status, _owner) in states.items() if not status.finished]
        if live:
            await self._claim(live)
        return states

    async def adopt(self, task_ids: list[str]) -> None:
        """A client's notice of tasks it wrote: adopt them, and follow the store where a
        task memory holds RUNNING has ended there (a lent run the client completed)."""
        unknown = [t for t in task_ids if t not in self.parts.active]
        held = [t for t in task_ids if t in self.parts.active]
        if unknown:
            await self._claim(unknown)
        if held:
            stored = await asyncio.to_thread(self.parts.store.states, held)
            ended = {t: status for t, (status, _owner) in stored.items() if status.finished}
            if ended:
                self._learn(await asyncio.to_thread(self.parts.store.runs_of, list(ended)))
                await self.parts.pipeline.run(self._ended(ended))

    async def sweep(self) -> None:
        """Adopt tasks whose notice never came (rows found by two sweeps in a row), and
        those whose claim the store may have taken without answering."""
        if self._unsure:
            unsure, self._unsure = sorted(self._unsure), set()
            await self._claim(unsure, unsure=True)
        rows = await asyncio.to_thread(self.parts.store.intake_rows, 1000)
        seen = {task_id for task_id, _at in rows}
        due = [task_id for task_id in seen if task_id in self._seen]
        self._seen = seen - set(due)
        if due:
            log.info("adopting %d task(s) whose intake notice did not come", len(due))
            await self._claim(due)

    async def _claim(self, task_ids: list[str], *, unsure: bool = False) -> None:
        """Claim the intake rows of ``task_ids`` and hold the claimed tasks in memory.

        Concurrent claims of one task (a notice, a sweep, a lookup) wait for the one in
        flight; a task whose row is gone was adopted before (or never was a client's).
        ``unsure``: an earlier claim of these failed for the store, perhaps after its
        commit: hold each the store has PENDING or RUNNING, claimed now or not.
        """
        others = {id(f): f for t in task_ids if (f := self._adopting.get(t)) is not None}
        todo = [t for t in dict.fromkeys(task_ids) if t not in self._adopting]
        if todo:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for task_id in todo:
                self._adopting[task_id] = done
            try:
                try:
                    rows, ended, runs = await asyncio.to_thread(self._read_claimed, todo,
                                                                unsure)
                except StoreError:
                    self._unsure.update(todo)
                    raise
                for status, owner in ended:  # a lent run that ended before its notice
                    self.parts.counts.add(owner, status)
                self._learn(runs)
                now = self.parts.clock()
                for row in rows:
                    if row.id in self.parts.active:  # loaded from the store on a restart
                        continue
                    entry = Entry.from_row(row)
                    self.parts.active.add(entry)
                    if entry.status is TaskStatus.RUNNING:  # a lent run
                        self.hold_lease(entry, row, now)
                    else:
                        self._arm(entry, row.depends_on, {})
            finally:
                for task_id in todo:
                    del self._adopting[task_id]
                done.set_result(None)
        if others:
            await asyncio.gather(*others.values())

    def _read_claimed(self, task_ids: list[str], unsure: bool = False) -> tuple[
            list[ActiveRow], list[tuple[TaskStatus, str | None]], list[Run]]:
        """The claimed tasks' rows, and the states and run times of those that already
        ended (``unsure``: of all ``task_ids``, claimed now or by a claim that failed)."""
        store = self.parts.store
        claimed = store.claim_intake(task_ids)
        if unsure:
            return store.active_rows(task_ids), [], []
        rows = store.active_rows(claimed) if claimed else []
        over = sorted(set(claimed) - {row.id for row in rows})
        if not over:
            return rows, [], []
        return rows, list(store.states(over).values()), store.runs_of(over)

    def _learn(self, runs: list[Run]) -> None:
        """Run times learn from the runs clients committed themselves (lent runs), as
        from the attempts executors report."""
        for task_type, parameters, units, seconds in runs:
            self.parts.run_times.learn(task_type, kind_of(parameters), units or 1, seconds)

    def hold_lease(self, entry: Entry, row: ActiveRow, now: float) -> None:
        """Hold the lease of a RUNNING task read from the store (a restart, a reload, a
        client's lent run), under its stored token, for a full TTL from ``now``."""
        self.parts.queues[entry.queue].grant(entry.queued_item(), entry.token,
                                             row.lease_executor or "recovered",
                                             now + self.parts.settings.lease_ttl_s)

    def resync(self, task_ids: list[str]) -> None:
        """A guarded write found the store ahead of memory: reload these tasks from it."""
        parts = self.parts
        log.warning("reloading %d task(s) that changed in the store: %s", len(task_ids),
                    task_ids[:5])
        rows = {r.id: r for r in parts.store.active_rows(task_ids)}
        now = parts.clock()
        for task_id in task_ids:
            entry = parts.active.remove(task_id)
            if entry is not None:
                sched = parts.queues[entry.queue]
                sched.remove(task_id)
                sched.release(task_id)
            row = rows.get(task_id)
            if row is None:
                if entry is not None:  # it ended (a client's lent run whose notice was lost)
                    for status, owner in parts.store.states([task_id]).values():
                        parts.counts.add(owner, status)
                parts.sessions.finished(task_id)
                continue
            fresh = Entry.from_row(row)
            parts.active.add(fresh)
            if fresh.status is TaskStatus.RUNNING:
                self.hold_lease(fresh, row, now)
            elif fresh.queued and not parts.deps.blocked(task_id):
                parts.estimate(fresh)
                parts.queues.push(fresh.queued_item(), now)

    def grant(self, client: str) -> IntakeGrant | None:
        """Room in each queue for a client that commits its own tasks, held until the
        grant expires; None when this store is not shared.

        A new grant replaces the client's last one: ask again before it expires.
        """
        parts = self.parts
        url = parts.settings.store_url
        if not parts.settings.direct_intake or url is None or ":memory:" in url:
            return None
        now = parts.clock()
        held = parts.intake.reservations
        credits = {}
        for name in parts.queues.names():
            free = parts.intake.room(name) - held.held(name, now, but=client)
            # a quarter of the room left at most: a queue near full takes every create
            # through the manager, which refuses exactly at max_queue_size
            credits[name] = max(0, min(parts.settings.intake_credits, free // 4))
        ttl = parts.settings.intake_grant_ttl_s
        held.hold(client, credits, now + ttl)
        types = {spec.name: (spec.version if spec.params_model is not None else None,
                             *parts.intake.defaults(spec.name))
                 for spec in parts.registry.specs()
                 if not parts.settings.for_type(spec.name).cache}  # cached: the manager's
        return IntakeGrant(store_url=url, credits=credits, ttl_s=ttl, types=types,
                           max_parameters_bytes=parts.settings.max_parameters_bytes,
                           node_id=self.node_id)
