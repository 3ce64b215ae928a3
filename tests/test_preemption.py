"""Preemption decided by the manager (without Ray, on both store backends, with a clock the
test controls): which running attempt a deadline takes, which it never takes, and what a
preempted attempt does to its task."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from raytasks.manager import TaskManagerCore
from raytasks.messages import Lease, Report
from raytasks.models import TaskCreateRequest, TaskErrorInfo, TaskPriority, TaskStatus
from raytasks.registry import TaskTypeSpec
from raytasks.settings import QuotaSettings, TaskTypeSettings
from tests import test_manager
from tests.test_manager import Clock, create, lease

LOW, MEDIUM, HIGH = TaskPriority.LOW, TaskPriority.MEDIUM, TaskPriority.HIGH
make_core = test_manager.make_core  # the fixture, over this module's clock


@pytest.fixture
def clock() -> Clock:
    """A clock in 2027 (deadlines must be real times)."""
    at = Clock()
    at.now = 1_800_000_000.0
    return at


def job(priority: TaskPriority, kind: str, task_type: str = "train", owner: str | None = None,
        deadline: float | None = None, **kw: Any) -> TaskCreateRequest:
    return TaskCreateRequest(
        name=kind, task_type=task_type, priority=priority, parameters={"kind": kind},
        owner=owner, deadline=datetime.fromtimestamp(deadline, tz=UTC) if deadline else None,
        **kw)


def trainer_core(make_core: Any, **settings: Any) -> TaskManagerCore:
    """A manager with a preemptible ``train`` type (grace 5 s), a non-preemptible ``etl``,
    and run times learned: a ``long`` run takes 600 s, a ``short`` one 10 s."""
    core: TaskManagerCore = make_core(**settings)
    for name, preemptible in (("train", True), ("etl", False)):
        core.registry.register(TaskTypeSpec(name, lambda p, c: None, preemptible=preemptible,
                                            preempt_grace_s=5.0))
        for _ in range(3):
            core.parts.run_times.learn(name, "long", 1, 600.0)
            core.parts.run_times.learn(name, "short", 1, 10.0)
    return core


async def running(core: TaskManagerCore, *requests: TaskCreateRequest,
                  task_type: str = "train") -> list[Lease]:
    """Create ``requests`` and lease each to an executor of its own."""
    await create(core, *requests)
    held = []
    for _ in requests:
        held += await lease(core, 1, executor=f"x-{uuid.uuid4().hex[:6]}", types=(task_type,))
    assert len(held) == len(requests)
    return held


async def test_a_deadline_preempts_the_lowest_most_slack_attempt_never_high(
        make_core: Any, clock: Clock) -> None:
    core = trainer_core(make_core)
    now = clock.now
    # Given every trainer busy: a HIGH run, a MEDIUM one, a LOW one with a deadline of its
    # own (little slack) and a LOW one without (infinite slack), each 600 s long
    high, medium, low_due, low_free = await running(
        core, job(HIGH, "long"), job(MEDIUM, "long"),
        job(LOW, "long", deadline=now + 700), job(LOW, "long"))
    # When a HIGH task of 10 s must be done within 60 s
    (urgent,) = await create(core, job(HIGH, "short", deadline=now + 60))
    chosen = core.preempt()
    # Then exactly one attempt is preempted: the LOW one without a deadline
    assert chosen == [low_free.task_id]
    # and the next tick preempts nothing more: one executor freed within the grace is enough
    clock.now += 1
    assert core.preempt() == []
    # and its heartbeat is told, with the grace time
    answer = await core.renew([(low_free.task_id, low_free.token), (high.task_id, high.token)])
    assert answer.preempt == [(low_free.task_id, 5.0)] and answer.lost == []
    # Two more urgent tasks, due in 20 s: the freed executor runs one in time, not both,
    # so the next victim goes: MEDIUM, whose slack (no deadline) beats the LOW one's
    await create(core, *[job(HIGH, "short", deadline=clock.now + 20) for _ in range(2)])
    assert core.preempt() == [medium.task_id]
    # and two more take the LOW one with a deadline; then only HIGH runs: nothing more
    clock.now += 1
    await create(core, *[job(HIGH, "short", deadline=clock.now + 20) for _ in range(2)])
    assert core.preempt() == [low_due.task_id]
    clock.now += 1
    await create(core, *[job(HIGH, "short", deadline=clock.now + 20) for _ in range(4)])
    assert core.preempt() == []
    assert urgent.id != high.task_id


async def test_no_preemption_for_equal_priority_unpreemptible_types_or_no_deadline(
        make_core: Any, clock: Clock) -> None:
    core = trainer_core(make_core)
    now = clock.now
    await running(core, job(MEDIUM, "long"))
    await running(core, job(LOW, "long", task_type="etl"), task_type="etl")
    # A MEDIUM deadline does not preempt a MEDIUM run; an etl deadline no etl run (the type
    # is not preemptible); a HIGH task without a deadline nothing
    await create(core, job(MEDIUM, "short", deadline=now + 60),
                 job(HIGH, "short", task_type="etl", deadline=now + 60), job(HIGH, "short"))
    assert core.preempt() == []
    # and a deadline the running work meets anyway preempts nothing either
    core2 = trainer_core(make_core)
    await running(core2, job(LOW, "short"))
    await create(core2, job(HIGH, "short", deadline=clock.now + 3600))
    assert core2.preempt() == []
    # The settings may turn a type off, or preemption altogether
    for settings in ({"task_types": {"train": TaskTypeSettings(preemptible=False)}},
                     {"preemption": False}):
        off = trainer_core(make_core, **settings)
        await running(off, job(LOW, "long"))
        await create(off, job(HIGH, "short", deadline=clock.now + 60))
        assert off.preempt() == []


async def test_an_owners_preemption_budget_and_a_tasks_limit_hold(make_core: Any,
                                                                    clock: Clock) -> None:
    budget = {"quotas": {"*": QuotaSettings(), "bob": QuotaSettings(max_preempted_per_day=1)}}
    core = trainer_core(make_core, **budget)
    now = clock.now
    b1, b2, c1 = await running(core, job(LOW, "long", owner="bob"),
                               job(LOW, "long", owner="bob"), job(LOW, "long", owner="carol"))
    await create(core, *[job(HIGH, "short", owner="dave", deadline=now + 20)
                         for _ in range(3)])
    # Bob's budget of one preemption a day lets one of his runs go, carol's default more
    chosen = core.preempt()
    assert len(chosen) == 2 and c1.task_id in chosen
    assert len({b1.task_id, b2.task_id} & set(chosen)) == 1
    for held in (b1, b2, c1):
        if held.task_id in chosen:
            await core.report([Report(held.task_id, held.token, "preempted",
                                      error=TaskErrorInfo(type="TaskPreemptedError",
                                                          reason="preempted", message="p"))])
    # A restarted manager counts the day's preemptions from the store
    again = trainer_core(make_core, **budget)
    assert again.parts.preempted.used("bob", clock.now) == 1
    # Bob's other run stays, even with more deadlines waiting; his budget is new the next
    # UTC day
    clock.now += 1
    await create(core, *[job(HIGH, "short", owner="dave", deadline=clock.now + 20)
                         for _ in range(3)])
    assert core.preempt() == []
    assert core.parts.preempted.used("bob", clock.now + 86400) == 0
    # A task preempted max_preemptions_per_task times is not preempted again
    capped = trainer_core(make_core, max_preemptions_per_task=0)
    await running(capped, job(LOW, "long"))
    await create(capped, job(HIGH, "short", deadline=clock.now + 60))
    assert capped.preempt() == []


async def test_a_preempted_attempt_requeues_at_once_without_spending_a_retry(
        make_core: Any, clock: Clock) -> None:
    core = trainer_core(make_core)
    (task,) = await create(core, job(LOW, "long", max_retries=1))
    preempted = TaskErrorInfo(type="TaskPreemptedError", reason="preempted", message="p")
    failed = TaskErrorInfo(type="E", reason="error", message="boom")
    # Preempted twice: each time back to PENDING at once, under a new attempt
    for attempt in (0, 1):
        (held,) = await lease(core, 1, types=("train",))
        assert held.attempt == attempt
        await core.report([Report(held.task_id, held.token, "preempted", error=preempted,
                                  run_s=3.0)])
        now = await core.get(task.id)
        assert (now.status, now.attempt, now.preemptions) == (TaskStatus.PENDING,
                                                               attempt + 1, attempt + 1)
        assert now.not_before is None and now.error and now.error.reason == "preempted"
    # Its one retry is still there: the first failure retries, the second fails it
    for expected in (TaskStatus.PENDING, TaskStatus.FAILED):
        clock.now += 600
        (held,) = await lease(core, 1, types=("train",))
        await core.report([Report(held.task_id, held.token, "failed", error=failed)])
        assert (await core.get(task.id)).status is expected
    # The attempts say how each ended
    attempts = await core.attempts(task.id)
    assert [(a.attempt, a.outcome, a.reason) for a in attempts] == [
        (0, "preempted", "preempted"), (1, "preempted", "preempted"),
        (2, "failed", "error"), (3, "failed", "error")]
    assert attempts[0].run_s == 3.0 and attempts[0].estimate_s == 600.0
    # and the owner's preemptions of the day are stored (the budget survives a restart)
    day = datetime.fromtimestamp(clock.now - 1200, tz=UTC).strftime("%Y-%m-%d")
    assert core.store.usage_of_day(day)[""][1] == 2


async def test_the_freed_executor_goes_to_the_deadline_and_the_victim_resumes_later(
        make_core: Any, clock: Clock) -> None:
    core = trainer_core(make_core)
    (victim,) = await running(core, job(LOW, "long"))
    (urgent,) = await create(core, job(HIGH, "short", deadline=clock.now + 60))
    assert core.preempt() == [victim.task_id]
    explained = await core.explain(urgent.id)
    assert explained.predicted_start is not None
    # its predicted start is within the grace time, not after the 600 s run
    assert explained.predicted_start.timestamp() <= clock.now + 5.0 + 1e-6
    await core.report([Report(victim.task_id, victim.token, "preempted", error=TaskErrorInfo(
        type="TaskPreemptedError", reason="preempted", message="p"))])
    (first,) = await lease(core, 1, types=("train",))
    assert first.task_id == urgent.id
    (second,) = await lease(core, 1, executor="x2", types=("train",))
    assert (second.task_id, second.attempt) == (victim.task_id, 1)


async def test_a_draining_node_hands_back_its_runs_within_its_deadline_at_no_cost(
        make_core: Any, clock: Clock) -> None:
    budget = {"quotas": {"*": QuotaSettings(max_preempted_per_day=0)}}
    core = trainer_core(make_core, **budget)
    # Given two runs on an executor of a node about to go, one elsewhere, no retries left,
    # and an owner whose preemption budget is nothing
    (on_node,) = await running(core, job(LOW, "long", max_retries=0))
    (etl,) = await running(core, job(MEDIUM, "long", task_type="etl", max_retries=0),
                           task_type="etl")
    (elsewhere,) = await running(core, job(LOW, "long", max_retries=0))
    executors = [core.parts.queues.lease_of("default", t.task_id).executor_id  # type: ignore[union-attr]
                 for t in (on_node, etl)]
    # When the node is drained with 3 s left, twice (the engine asks every round)
    assert sorted(core.hand_back(executors, 3.0)) == sorted([on_node.task_id, etl.task_id])
    assert core.hand_back(executors, 2.5) == []
    # Then both are told to stop within the deadline, less the margin, whatever their type
    answer = await core.renew([(t.task_id, t.token) for t in (on_node, etl, elsewhere)])
    assert sorted(answer.preempt) == sorted([(on_node.task_id, 2.0), (etl.task_id, 2.0)])
    # and each hand-back requeues at once, said as drained, spending no retry and nothing
    # of the owner's preemption budget
    for held in (on_node, etl):
        await core.report([Report(held.task_id, held.token, "preempted", error=TaskErrorInfo(
            type="TaskPreemptedError", reason="preempted", message="p"))])
        task = await core.get(held.task_id)
        assert task.status is TaskStatus.PENDING and task.attempt == 1, task
        assert task.error is not None and task.error.reason == "drained"
        assert [a.reason for a in await core.attempts(held.task_id)] == ["drained"]
    assert core.parts.preempted.used(None, clock.now) == 0
    assert trainer_core(make_core, **budget).parts.preempted.used(None, clock.now) == 0
