"""The executors' side of the manager: leases, reports, heartbeats, checkpoints, loans.

An executor calls for work with one long poll (``report_and_lease``): it reports what it
ran and leases what is next; while it waits, the manager may lend it to a client instead
(``lend``: Ray's owners lease workers from the raylet the same way). Every call that
names a task adopts it first if a client wrote it (:mod:`.adoption`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from ..errors import StoreError
from ..messages import LeaseRequest, Loan, RenewAnswer, Report, ReportAnswer, Work
from ..models import TaskStatus
from ..resources import model_key
from . import preempt
from .adoption import Adoption
from .changes import Changes
from .parts import Parts
from .pipeline import Plan, Round
from .preempt import Preemption

log = logging.getLogger(__name__)

#: A task handed back from a draining node stops this long before the node's deadline
#: (its report and checkpoint still have to travel).
DRAIN_MARGIN_S = 1.0


class WorkDesk:
    """Hands out leases and loans, takes reports and heartbeats."""

    def __init__(self, parts: Parts, ops: Changes, adoption: Adoption) -> None:
        self.parts = parts
        self.ops = ops
        self.adoption = adoption

    async def report_and_lease(self, request: LeaseRequest) -> Work:
        """An executor's one round trip per batch: report what it ran, lease what is next,
        waiting up to ``request.wait_s`` for work (or a loan to a client).

        Idempotent by ``request.request_id``: a call Ray retries after a manager restart
        gets the leases granted to the first one (they are in the store), no new ones.
        """
        parts = self.parts
        if request.request_id in parts.answers:
            return Work(parts.answers[request.request_id])
        await self.adoption.ensure_adopted(r.task_id for r in request.reports)
        deadline = time.monotonic() + request.wait_s
        leases = await parts.pipeline.run(self.ops.report_and_lease(request))
        while True:
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return Work(leases)
            loan = await parts.arrivals.wait(request.executor_id, request.task_types,
                                             min(remaining, 1.0))
            if loan is not None:
                return Work(loan=loan)
            leases = await parts.pipeline.run(self.ops.lease(request))

    def lend(self, task_type: str) -> Loan | None:
        """Lend an idle executor of ``task_type`` to a client for ``executor_loan_s``; None
        when no executor waits for work of that type (then nothing of the type was
        ready), the type limits how many run at once (only a lease can enforce that), or
        loans are off (``executor_loan_s=0``)."""
        parts = self.parts
        duration_s = parts.settings.executor_loan_s
        if duration_s <= 0 or task_type not in parts.registry \
                or self.ops.limit(task_type) is not None:
            return None
        version = parts.registry.get(task_type).version
        loan = parts.arrivals.lend(task_type, lambda executor_id: Loan(
            loan_id=uuid.uuid4().hex, executor_id=executor_id, task_type=task_type,
            handler_version=version, duration_s=duration_s,
            lease_ttl_s=parts.settings.lease_ttl_s))
        if loan is not None:
            now = time.monotonic()
            for old in [k for k, (_e, _t, until) in parts.loans.items() if until < now]:
                del parts.loans[old]
            parts.loans[loan.loan_id] = (loan.executor_id, task_type, now + duration_s)
        return loan

    def loans_of(self, task_type: str) -> list[tuple[str, str]]:
        """The loans of ``task_type`` that may still run: (executor, loan id)."""
        now = time.monotonic()
        return [(executor, loan_id) for loan_id, (executor, t, until)
                in self.parts.loans.items() if t == task_type and until >= now]

    async def report(self, reports: list[Report]) -> ReportAnswer:
        """Apply executor outcomes; a report under a stale lease token is rejected."""
        await self.adoption.ensure_adopted(r.task_id for r in reports)
        answer: ReportAnswer = await self.parts.pipeline.run(self.ops.reports(reports))
        return answer

    async def renew(self, items: list[tuple[str, int]]) -> RenewAnswer:
        """Heartbeats: extend leases (memory only). Says which are lost or to be cancelled.

        A lent run is adopted here if the manager has not adopted it yet: a heartbeat
        never finds a lent run unknown, since its client committed it before sending it.
        """
        await self.adoption.ensure_adopted(task_id for task_id, _token in items)
        parts = self.parts
        deadline = parts.clock() + parts.settings.lease_ttl_s
        lost, cancel, preempt = [], [], []
        for task_id, token in items:
            entry = parts.active.get(task_id)
            sched = parts.queues.get(entry.queue) if entry is not None else None
            if entry is None or sched is None or not sched.renew(task_id, token, deadline):
                lost.append(task_id)
            elif entry.cancel_requested:
                cancel.append(task_id)
            elif entry.preempt_at is not None:
                grace = entry.preempt_grace_s
                preempt.append((task_id, parts.grace_s(entry.task_type) if grace is None
                                else grace))
        return RenewAnswer(lost=lost, cancel=cancel, preempt=preempt)

    def preempt(self) -> list[Preemption]:
        """Preempt the running attempts a deadline needs (:mod:`.preempt`), telling their
        executors at once (their heartbeats repeat it)."""
        parts = self.parts
        chosen = preempt.choose(parts, parts.clock())
        for p in chosen:
            rec = parts.queues.lease_of(p.victim.queue, p.victim.task_id)
            log.info("preempting %s (%s, %s) for %s's deadline", p.victim.task_id,
                     p.victim.task_type, p.victim.priority.name, p.for_task)
            if rec is not None and parts.on_preempt is not None:
                parts.on_preempt(rec.executor_id, p.victim.task_id, rec.token, p.grace_s)
        return chosen

    def hand_back(self, executor_ids: list[str], left_s: float | None) -> list[str]:
        """The running attempts of ``executor_ids``, whose node is being drained and goes
        away in ``left_s`` (None: no deadline given), are asked to checkpoint and stop: a
        preemption that spends neither a retry nor the owner's preemption budget. Each has
        its type's grace time, cut to end ``DRAIN_MARGIN_S`` before the node does. Returns
        the task ids handed back now (not those handed back before)."""
        parts = self.parts
        wanted, now = set(executor_ids), parts.clock()
        out = []
        for entry in parts.active:
            if entry.status is not TaskStatus.RUNNING or entry.cancel_requested \
                    or entry.preempt_cause == "drain":  # handed back already
                continue
            rec = parts.queues.lease_of(entry.queue, entry.task_id)
            if rec is None or rec.executor_id not in wanted:
                continue
            grace = parts.grace_s(entry.task_type)
            if left_s is not None:
                grace = min(grace, max(0.0, left_s - DRAIN_MARGIN_S))
            if entry.preempt_grace_s is not None:
                grace = min(grace, entry.preempt_grace_s)
            if entry.preempt_at is None:
                entry.preempt_at = now
            entry.preempt_cause, entry.preempt_grace_s = "drain", grace
            log.info("handing back %s (%s) from %s within %.1f s: its node is draining",
                     entry.task_id, entry.task_type, rec.executor_id, grace)
            if parts.on_preempt is not None:
                parts.on_preempt(rec.executor_id, entry.task_id, rec.token, grace)
            out.append(entry.task_id)
        return out

    async def expire_leases(self) -> list[str]:
        """Retry or fail (as lost) every task whose lease ran out. Returns their ids.

        Time the store was away does not count: while it is (a commit failed for it),
        nothing expires and the store is probed instead; when it is back, every lease
        gets a full TTL again (:meth:`store_back`), since heartbeats and reports that
        needed the store could not get through meanwhile.
        """
        parts = self.parts
        pipeline = parts.pipeline
        if pipeline.away_since is not None:
            try:
                await asyncio.to_thread(parts.store.ping)
            except StoreError:
                return []
            pipeline.back()
            return []
        if not parts.queues.expired(parts.clock()):
            return []
        expired = self.ops.expired()

        def unless_away(ctx: Round) -> Plan:
            # planned at the round: the store may have gone away since the check above
            return expired(ctx) if pipeline.away_since is None else \
                Plan(apply=lambda _ids: ReportAnswer([], []))

        answer: ReportAnswer = await pipeline.run(unless_away)
        return answer.accepted

    def store_back(self, away_s: float) -> None:
        """The store is back after ``away_s``: every lease gets a full TTL from now, so
        none expires for want of heartbeats or reports the outage held up."""
        parts = self.parts
        deadline = parts.clock() + parts.settings.lease_ttl_s
        extended = 0
        for _queue, rec in parts.queues.expired(deadline):
            rec.deadline = deadline
            extended += 1
        log.warning("store back after %.1f s: %d lease(s) extended to a full TTL",
                    away_s, extended)

    async def record_model(self, task_id: str, token: int, registry: str, model_id: str,
                           sha256: str) -> bool:
        """Record the digest of a model version a training attempt saved; False if the
        attempt lost its lease (the version is then never loaded)."""
        await self.adoption.ensure_adopted([task_id])
        recorded: bool = await self.parts.pipeline.run(
            self.ops.record_model(task_id, token, registry, model_id, sha256))
        return recorded

    async def model_digest(self, task_id: str, registry: str, model_id: str) -> str | None:
        """The digest recorded for a model version in the registry of ``task_id``'s owner
        (a task may load only its own owner's models)."""
        store = self.parts.store
        entry = self.parts.active.get(task_id)
        if entry is not None:
            owner = entry.owner
        else:
            task = await asyncio.to_thread(store.get, task_id)
            if task is None:
                return None
            owner = task.owner
        return await asyncio.to_thread(store.model_digest, model_key(owner, registry, model_id))

    async def save_checkpoint(self, task_id: str, token: int, state: Any) -> bool:
        """Persist a running attempt's checkpoint; False if the attempt lost its lease."""
        await self.adoption.ensure_adopted([task_id])
        saved: bool = await self.parts.pipeline.run(self.ops.checkpoint(task_id, token, state))
        return saved
