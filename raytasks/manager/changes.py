"""Every change of a task's state, as a plan for the :class:`CommitPipeline`.

Each method returns a *planner*: it reads memory, claims the tasks it changes in
the round, and returns the rows to commit and an ``apply`` that changes memory
once they are committed. Nothing here changes memory before the commit.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidTransitionError
from ..lifecycle import check_transition
from ..lineage import own
from ..messages import Lease, LeaseRequest, Report, ReportAnswer
from ..models import Task, TaskErrorInfo, TaskPriority, TaskStatus
from ..models import TaskUpdateRequest as UpdateRequest
from ..resources import model_key
from ..store.base import RowUpdate, WriteBatch, encode_tags, loads_or, to_json
from .intake import CreateRequest, Known
from .outbox import status_event
from .outcomes import attempt_row, decide, drained, lost_report
from .parts import Parts
from .pipeline import Plan, Planner, Round
from .state import Entry

P, R = TaskStatus.PENDING, TaskStatus.RUNNING


class Changes:
    """The plans of every change of a task, over the manager's :class:`Parts`."""

    def __init__(self, parts: Parts, rng: random.Random) -> None:
        self.parts = parts
        self.rng = rng
        self.stale_reports = 0
        self.limits: dict[str, int | None] = {}  # concurrency limit by type (cleared on change)

    # ------------------------------------------------------------- creation

    def create(self, requests: Sequence[CreateRequest], ids: list[str], known: Known,
               enqueue: bool, *, checked: dict[str, int] | None = None,
               watch: str | None = None) -> Planner:
        """Store (and queue) new tasks. The answer has, per request, the stored Task of a
        repeat or the row of a new task; ``watch`` registers them in a client's session."""
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([*ids, *(d for r in requests for d in r.depends_on if d in parts.active)])
            intake = parts.intake.plan(requests, ids, ctx, known, enqueue=enqueue,
                                      checked=checked)
            ctx.keys.update(intake.claimed)
            for row in intake.rows:
                row["cache_key"] = known.cache_keys.get(row["id"])
            batch = WriteBatch(inserts=intake.rows, events=[status_event(
                task_id=r["id"], task_type=r["task_type"], owner=r["owner"], attempt=0,
                priority=r["priority"], previous=None, status=P, now=ctx.now)
                for r in intake.rows])

            def apply(event_ids: list[int]) -> list[Task | dict[str, Any]]:
                entries = []
                for row in intake.rows:
                    entry = Entry(task_id=row["id"], task_type=row["task_type"], status=P,
                                  priority=TaskPriority(row["priority"]), queue=row["queue"],
                                  attempt=0, max_retries=row["max_retries"],
                                  timeout_s=row["timeout_s"],
                                  parameters=row["parameters"], owner=row["owner"],
                                  queued=enqueue, token=0, created_at=ctx.now,
                                  enqueued_at=row.get("enqueued_at"),
                                  max_cpu_s=row["max_cpu_s"], deadline=row["deadline"],
                                  work_units=row["work_units"],
                                  cached=row["cache_key"] is not None)
                    parts.active.add(entry)
                    entries.append((entry, loads_or(row["depends_on"], "[]", list)))
                if watch is not None:
                    parts.sessions.watch(watch, (e.task_id for e, _ in entries))
                stored = {d: s for d, (s, _owner) in known.deps.items()}
                for entry, depends_on in entries:
                    source = known.cache_hits.get(entry.task_id)
                    if source is not None:
                        parts.pipeline.submit(self.end_pending(
                            entry.task_id, TaskStatus.COMPLETED, None, source))
                    else:
                        self.arm(entry, depends_on, stored)
                parts.publish(batch.events, event_ids)
                return intake.results
            return Plan(batch, apply)
        return plan

    def arm(self, entry: Entry, depends_on: list[str],
            stored: dict[str, TaskStatus]) -> None:
        """Block a PENDING task on its unfinished dependencies, or queue it, or end it."""
        parts = self.parts
        blocked, ended = set(), None
        for dep in depends_on:
            if dep in parts.active:
                blocked.add(dep)
            elif stored.get(dep) is not TaskStatus.COMPLETED:
                ended = stored.get(dep)
                break
        if ended is not None or any(d not in parts.active and d not in stored
                                    for d in depends_on):
            why = f"a task it depends on ended {ended.value}" if ended else \
                "a task it depends on no longer exists"
            target = TaskStatus.CANCELLED if ended is TaskStatus.CANCELLED else TaskStatus.FAILED
            parts.pipeline.submit(self.end_pending(entry.task_id, target, TaskErrorInfo(
                type="DependencyFailed", reason="dependency", message=why)))
            return
        parts.deps.block(entry.task_id, set(depends_on), blocked)
        if not blocked and entry.queued:
            self._push(entry)

    def enqueue(self, task_id: str, priority: TaskPriority | None) -> Planner:
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([task_id])
            entry = parts.active.get(task_id)
            if entry is None:
                raise InvalidTransitionError(task_id, "finished", "queued")
            fields: dict[str, Any] = {"queued": True, "updated_at": ctx.now}
            reprioritise = priority is not None and priority != entry.priority \
                and entry.status is P
            if reprioritise:
                assert priority is not None
                fields["priority"] = int(priority)
            if not entry.queued:
                parts.intake.admit_queue(entry.queue, 1, ctx)
                fields["enqueued_at"] = ctx.now
            if len(fields) == 2 and entry.queued:
                return Plan()

            def apply(_ids: list[int]) -> None:
                if reprioritise:
                    assert priority is not None
                    entry.priority = priority
                    parts.queues[entry.queue].reprioritise(task_id, priority, parts.clock())
                if not entry.queued:
                    parts.active.set_queued(entry)
                    entry.enqueued_at = ctx.now
                    if not parts.deps.blocked(task_id) and entry.status is P:
                        self._push(entry)
            return Plan(WriteBatch(updates=[RowUpdate(task_id, fields)]), apply)
        return plan

    # --------------------------------------------------------------- leases

    def lease(self, request: LeaseRequest) -> Planner:
        parts = self.parts
        settings = parts.settings

        def plan(ctx: Round) -> Plan:
            n = max(1, min(request.n, settings.lease_batch_max))
            chosen: list[tuple[Entry, Any, Lease]] = []
            batch = WriteBatch()
            while len(chosen) < n:
                item = parts.queues.best(request.task_types, ctx.now,
                                        allowance=lambda t: self._allowance(t, ctx),
                                        admit=lambda o, t: self._admit(o, t, ctx),
                                        exclude=ctx.touched, skip=ctx.scanned)
                if item is None:
                    break
                entry = parts.active.get(item.task_id)
                assert entry is not None
                ctx.claim([entry.task_id])
                ctx.running[entry.owner] += 1
                ctx.running_by_type[(entry.owner, entry.task_type)] += 1
                ctx.starts[entry.task_type] += 1
                token = entry.token + 1
                batch.updates.append(RowUpdate(entry.task_id, {
                    "status": R.value, "lease_token": token, "started_at": ctx.now,
                    "updated_at": ctx.now, "not_before": None,
                    "lease_request": request.request_id,
                    "lease_executor": request.executor_id}, token=entry.token, status=P.value))
                batch.events.append(_event(entry, P, R, ctx.now))
                chosen.append((entry, item, self.lease_of(entry, ctx.now, token)))
            if not chosen:
                return Plan(apply=lambda _ids: [])

            def apply(event_ids: list[int]) -> list[Lease]:
                for entry, item, lease in chosen:
                    sched = parts.queues[entry.queue]
                    sched.pop(item, ctx.now)
                    sched.grant(item, lease.token, request.executor_id, lease.deadline)
                    entry.token, entry.not_before = lease.token, None
                    entry.started_at = ctx.now
                    estimate = parts.estimate(entry)
                    entry.predicted_run_s = estimate if entry.estimate_samples else None
                    parts.active.set_status(entry, R)
                leases = [lease for _, _, lease in chosen]
                parts.remember(request.request_id, leases)
                parts.publish(batch.events, event_ids)
                return leases
            return Plan(batch, apply)
        return plan

    def lease_of(self, entry: Entry, now: float, token: int | None = None) -> Lease:
        """The lease of ``entry`` under ``token`` (its own by default), for a full TTL."""
        registry = self.parts.registry
        return Lease(task_id=entry.task_id, task_type=entry.task_type,
                     token=entry.token if token is None else token, attempt=entry.attempt,
                     parameters=entry.parameters, timeout_s=entry.timeout_s,
                     deadline=now + self.parts.settings.lease_ttl_s, owner=entry.owner,
                     handler_version=registry.get(entry.task_type).version
                     if entry.task_type in registry else 0, max_cpu_s=entry.max_cpu_s,
                     cache=entry.cached)

    def report_and_lease(self, request: LeaseRequest) -> Planner:
        """An executor's reports and its next leases, in one round and one commit."""
        reports, lease = self.reports(request.reports), self.lease(request)

        def plan(ctx: Round) -> Plan:
            first = reports(ctx) if request.reports else Plan()
            second = lease(ctx)
            batch = WriteBatch()
            batch.extend(first.batch)
            batch.extend(second.batch)
            split = len(first.batch.events)

            def apply(event_ids: list[int]) -> list[Lease]:
                first.apply(event_ids[:split])
                leases: list[Lease] = second.apply(event_ids[split:])
                return leases
            return Plan(batch, apply)
        return plan

    def limit(self, task_type: str) -> int | None:
        """Most tasks of ``task_type`` that may run at once (None: no limit)."""
        parts = self.parts
        if task_type not in self.limits:
            limit = parts.settings.for_type(task_type).max_concurrency
            if limit is None and task_type in parts.registry:
                limit = parts.registry.get(task_type).max_concurrency
            self.limits[task_type] = limit
        return self.limits[task_type]

    def _allowance(self, task_type: str, ctx: Round) -> int | None:
        limit = self.limit(task_type)
        if limit is None:
            return None
        return limit - self.parts.queues.running(task_type) - ctx.starts[task_type]

    def _admit(self, owner: str | None, task_type: str, ctx: Round) -> bool:
        """Whether one more task of ``owner`` and ``task_type`` may start (running quotas)."""
        quota = self.parts.settings.quota_for(owner)
        if quota is None:
            return True
        if quota.max_cpu_s_per_day is not None and \
                self.parts.cpu.used(owner, ctx.now) >= quota.max_cpu_s_per_day:
            return False  # its attempts used the day's CPU: none starts before tomorrow
        active = self.parts.active
        if quota.max_running is not None and \
                active.running[owner] + ctx.running[owner] >= quota.max_running:
            return False
        limit = quota.max_running_per_type.get(task_type)
        return limit is None or active.running_by_type[(owner, task_type)] \
            + ctx.running_by_type[(owner, task_type)] < limit

    # -------------------------------------------------------------- reports

    def reports(self, reports: list[Report]) -> Planner:
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim(r.task_id for r in reports)
            batch = WriteBatch()
            accepted, rejected, steps = [], [], []
            for rep in reports:
                entry = parts.active.get(rep.task_id)
                rec = parts.queues.lease_of(entry.queue, rep.task_id) if entry else None
                if entry is None or rec is None or rec.token != rep.token \
                        or rep.task_id in accepted:
                    rejected.append(rep.task_id)
                    continue
                if rep.outcome == "preempted" and entry.preempt_cause == "drain":
                    rep = drained(rep)
                step = decide(entry, rep, ctx.now, parts.settings, self.rng)
                accepted.append(rep.task_id)
                steps.append((entry, rep, step))
                batch.logs += [line._asdict() for line in rep.lines]
                batch.attempts.append(attempt_row(rep.task_id, entry.attempt, rep,
                                                  entry.owner, ctx.now,
                                                  entry.predicted_run_s))
                if rep.environment is not None:
                    batch.environments.setdefault(*rep.environment)
                batch.updates.append(RowUpdate(rep.task_id, step.fields, token=rep.token,
                                               status=R.value))
                batch.events.append(_event(entry, R, step.target, ctx.now, step.error,
                                           attempt=step.attempt, cpu_s=rep.cpu_s))

            def apply(event_ids: list[int]) -> ReportAnswer:
                self.stale_reports += len(rejected)
                for entry, rep, step in steps:
                    parts.cpu.add(entry.owner, rep.cpu_s, ctx.now)
                    if rep.outcome == "completed" and rep.run_s and not entry.preemptions:
                        parts.run_times.learn(entry.task_type, entry.kind,
                                              entry.work_units or 1, rep.run_s)
                    drained = entry.preempt_cause == "drain"
                    entry.preempt_at = entry.preempt_cause = entry.preempt_grace_s = None
                    if rep.outcome == "preempted" and step.target is P:
                        entry.preemptions += 1
                        if not drained:  # a node drained is no owner's doing
                            parts.preempted.add(entry.owner, 1, ctx.now)
                    parts.queues[entry.queue].release(entry.task_id, rep.token)
                    if step.attempt is not None:
                        entry.attempt = step.attempt
                    if step.requeue_at is not None:
                        parts.active.set_status(entry, P)
                        entry.enqueued_at = ctx.now
                        entry.not_before = step.requeue_at if step.requeue_at > ctx.now \
                            else None
                        self._push(entry)
                    else:
                        self._finish(entry, step.target)
                parts.publish(batch.events, event_ids)
                return ReportAnswer(accepted=accepted, rejected=rejected)
            return Plan(batch, apply)
        return plan

    def ended(self, stored: dict[str, TaskStatus]) -> Planner:
        """Running tasks the store shows ended, ended by a client (its lent run's
        completion, committed fenced by the run's lease): memory follows the store, with
        nothing to commit (the client's commit was the change)."""
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim(stored)
            done = [(entry, status) for task_id, status in stored.items()
                    if (entry := parts.active.get(task_id)) is not None
                    and entry.status is R and status.finished]

            def apply(_ids: list[int]) -> None:
                for entry, status in done:
                    parts.queues[entry.queue].release(entry.task_id, entry.token)
                    self._finish(entry, status)
            return Plan(apply=apply)
        return plan

    def expired(self) -> Planner:
        """Retry or fail (as lost) the tasks whose leases ran out (as of the round)."""
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            reports = []
            for _queue, rec in parts.queues.expired(ctx.now):
                entry = parts.active.get(rec.task_id)
                reports.append(lost_report(rec.task_id, rec.token, rec.executor_id,
                                           bool(entry and entry.cancel_requested)))
            return self.reports(reports)(ctx)
        return plan

    def checkpoint(self, task_id: str, token: int, state: Any) -> Planner:
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([task_id])
            entry = parts.active.get(task_id)
            if entry is None or entry.token != token or entry.status is not R:
                return Plan(apply=lambda _ids: False)
            row = RowUpdate(task_id, {"checkpoint": to_json(state)}, token=token,
                            status=R.value)
            return Plan(WriteBatch(updates=[row]), apply=lambda _ids: True)
        return plan

    def record_model(self, task_id: str, token: int, registry: str, model_id: str,
                     sha256: str) -> Planner:
        """A training attempt saved a model version: record its digest, only while the
        attempt holds the lease (its guarded update is in the same commit)."""
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([task_id])
            entry = parts.active.get(task_id)
            if entry is None or entry.token != token or entry.status is not R:
                return Plan(apply=lambda _ids: False)
            row = {"key": model_key(entry.owner, registry, model_id), "owner": entry.owner,
                   "registry": registry, "model_id": model_id, "sha256": sha256,
                   "task_id": task_id, "attempt": entry.attempt, "created_at": ctx.now}
            guard = RowUpdate(task_id, {"updated_at": ctx.now}, token=token, status=R.value)
            return Plan(WriteBatch(updates=[guard], models=[row]), apply=lambda _ids: True)
        return plan

    # -------------------------------------------------- cancel, retry, update

    def cancel(self, task_id: str) -> Planner:
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            entry = parts.active.get(task_id)
            if entry is None:
                raise InvalidTransitionError(task_id, "finished", "CANCELLED")
            if entry.status is P:
                return self.end_pending(task_id, TaskStatus.CANCELLED, TaskErrorInfo(
                    type="Cancelled", reason="cancelled", message="cancelled while pending"))(ctx)
            ctx.claim([task_id])
            if entry.cancel_requested:
                return Plan()
            row = RowUpdate(task_id, {"cancel_requested": True, "updated_at": ctx.now},
                            status=R.value)

            def apply(_ids: list[int]) -> None:
                entry.cancel_requested = True
                rec = parts.queues.lease_of(entry.queue, task_id)
                if rec is not None and parts.on_cancel is not None:
                    parts.on_cancel(rec.executor_id, task_id, rec.token)
            return Plan(WriteBatch(updates=[row]), apply)
        return plan

    def end_pending(self, task_id: str, target: TaskStatus, error: TaskErrorInfo | None,
                    cached: Task | None = None) -> Planner:
        """End a PENDING task without running it: cancelled, a dependency failed, or
        COMPLETED with ``cached``'s result (a hit of :mod:`raytasks.cache`; until this
        commits, the task is stored queued, and a manager that stops meanwhile runs it)."""
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([task_id])
            entry = parts.active.get(task_id)
            if entry is None or entry.status is not P:
                return Plan()  # it moved on meanwhile
            check_transition(task_id, entry.status, target)
            err = error.model_dump_json() if error is not None else None
            fields = {} if cached is None else {
                "result": to_json(cached.result), "lineage": to_json(own(cached.lineage)),
                "cached_from": cached.cached_from or cached.id, "queued": False}  # who ran
            batch = WriteBatch(
                updates=[RowUpdate(task_id, {"status": target.value, "error": err,
                                             "finished_at": ctx.now, "updated_at": ctx.now,
                                             **fields}, status=P.value)],
                events=[_event(entry, P, target, ctx.now, err)])

            def apply(event_ids: list[int]) -> None:
                self._finish(entry, target)
                parts.publish(batch.events, event_ids)
            return Plan(batch, apply)
        return plan

    def retry(self, stored: Task, dep_states: dict[str, TaskStatus]) -> Planner:
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([stored.id])
            check_transition(stored.id, stored.status, P)
            attempt = stored.attempt + 1
            fields = {"status": P.value, "attempt": attempt, "error": None,
                      "finished_at": None, "started_at": None, "cancel_requested": False,
                      "queued": True, "updated_at": ctx.now, "not_before": None,
                      "enqueued_at": ctx.now, "lease_request": None, "lease_executor": None}
            entry = Entry(task_id=stored.id, task_type=stored.task_type, status=P,
                          priority=stored.priority, queue=stored.queue, attempt=attempt,
                          max_retries=stored.max_retries, timeout_s=stored.timeout_s,
                          parameters=json.dumps(stored.parameters, separators=(",", ":")),
                          owner=stored.owner, queued=True,
                          token=stored.lease_token, created_at=stored.created_at.timestamp(),
                          enqueued_at=ctx.now, max_cpu_s=stored.max_cpu_s,
                          deadline=stored.deadline.timestamp() if stored.deadline else None,
                          work_units=stored.work_units)
            batch = WriteBatch(updates=[RowUpdate(stored.id, fields, status=stored.status.value)],
                               events=[_event(entry, stored.status, P, ctx.now)])

            def apply(event_ids: list[int]) -> None:
                parts.counts.add(stored.owner, stored.status, -1)
                parts.active.add(entry)
                if parts.queues.get(entry.queue) is None:
                    parts.queues.add(entry.queue)
                self.arm(entry, stored.depends_on, dep_states)
                parts.publish(batch.events, event_ids)
            return Plan(batch, apply)
        return plan

    def update(self, stored: Task, request: UpdateRequest) -> Planner:
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([stored.id])
            entry = parts.active.get(stored.id)
            status = entry.status if entry is not None else stored.status
            fields: dict[str, Any] = {"updated_at": ctx.now}
            if request.name is not None:
                fields["name"] = request.name
            if request.tags is not None:
                fields["tags"] = encode_tags(request.tags)
            if request.notify is not None:
                fields["notify"] = json.dumps(request.notify)
            priority = request.priority
            if priority is not None and priority != stored.priority:
                if status is not P:
                    raise InvalidTransitionError(stored.id, status.value,
                                                 f"re-prioritised to {priority.name}")
                fields["priority"] = int(priority)

            def apply(_ids: list[int]) -> None:
                if entry is not None and "priority" in fields:
                    assert priority is not None
                    entry.priority = priority
                    parts.queues[entry.queue].reprioritise(stored.id, priority, parts.clock())
            return Plan(WriteBatch(updates=[RowUpdate(stored.id, fields)]), apply)
        return plan

    def delete(self, stored: Task) -> Planner:
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            ctx.claim([stored.id])
            if not stored.status.finished or stored.id in parts.active:
                raise InvalidTransitionError(stored.id, stored.status.value, "deleted")
            if parts.deps.has_dependents(stored.id):  # a live task still names it
                raise InvalidTransitionError(stored.id, f"{stored.status.value} with tasks "
                                             "depending on it", "deleted")

            def apply(_ids: list[int]) -> asyncio.Future[None]:
                parts.counts.add(stored.owner, stored.status, -1)
                assert parts.settings.artifact_root is not None
                folder = parts.settings.artifact_root / stored.id
                return asyncio.get_running_loop().run_in_executor(None, _remove, [folder])
            return Plan(WriteBatch(deletes=[stored.id]), apply)
        return plan

    def prune(self, rows: list[dict[str, Any]]) -> Planner:
        """Delete finished tasks (retention), with their artifacts."""
        parts = self.parts

        def plan(ctx: Round) -> Plan:
            gone = [r for r in rows if r["id"] not in parts.active]
            ctx.claim(r["id"] for r in gone)

            def apply(_ids: list[int]) -> int:
                assert parts.settings.artifact_root is not None
                folders = [parts.settings.artifact_root / r["id"] for r in gone]
                for r in gone:
                    parts.counts.add(r["owner"], TaskStatus(r["status"]), -1)
                asyncio.get_running_loop().run_in_executor(None, _remove, folders)
                return len(gone)
            return Plan(WriteBatch(deletes=[r["id"] for r in gone]), apply)
        return plan

    # ---------------------------------------------------------------- memory

    def _push(self, entry: Entry) -> None:
        parts = self.parts
        now = parts.clock()
        parts.predict(entry)
        parts.queues.push(entry.queued_item(), now)
        if entry.not_before and entry.not_before > now:
            parts.arrivals.at(entry.not_before - now, entry.task_type)
        else:
            parts.arrivals.arrived(entry.task_type)

    def _finish(self, entry: Entry, status: TaskStatus) -> None:
        """A task ended: forget it, wake its waiters, release or end its dependents."""
        parts = self.parts
        parts.active.remove(entry.task_id)
        parts.counts.add(entry.owner, status)
        parts.queues.remove(entry.queue, entry.task_id)
        parts.deps.forget(entry.task_id)
        parts.sessions.finished(entry.task_id)
        if status is TaskStatus.COMPLETED:
            for child_id in parts.deps.completed(entry.task_id):
                child = parts.active.get(child_id)
                if child is not None and child.queued and child.status is P:
                    self._push(child)
            return
        target = TaskStatus.CANCELLED if status is TaskStatus.CANCELLED else TaskStatus.FAILED
        for child_id in parts.deps.ended(entry.task_id):
            parts.pipeline.submit(self.end_pending(child_id, target, TaskErrorInfo(
                type="DependencyFailed", reason="dependency",
                message=f"a task it depends on ended {status.value}")))


def _event(entry: Entry, previous: TaskStatus | None, status: TaskStatus, now: float,
           error: str | None = None, attempt: int | None = None,
           cpu_s: float | None = None) -> dict[str, Any]:
    return status_event(task_id=entry.task_id, task_type=entry.task_type, owner=entry.owner,
                        attempt=entry.attempt if attempt is None else attempt,
                        priority=int(entry.priority), previous=previous, status=status,
                        now=now, error=error, cpu_s=cpu_s)


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)

