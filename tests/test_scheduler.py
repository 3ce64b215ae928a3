"""The pure scheduler: priorities, FIFO, aging, delays, admission control, leases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raytasks.errors import QueueFullError
from raytasks.manager.waiters import Arrivals
from raytasks.messages import Loan
from raytasks.models import QueuedTask, TaskPriority
from raytasks.scheduler import TaskScheduler

H, M, L = TaskPriority.HIGH, TaskPriority.MEDIUM, TaskPriority.LOW


def _item(task_id: str, priority: TaskPriority, at: float, task_type: str = "t",
          not_before: float = 0.0) -> QueuedTask:
    return QueuedTask(task_id=task_id, task_type=task_type, priority=priority,
                      enqueued_at=at, not_before=not_before)


def _drain(s: TaskScheduler, now: float, types: list[str] | None = None) -> list[str]:
    out = []
    while (item := s.peek_best(types or ["t"], now)) is not None:
        s.pop(item)
        out.append(item.task_id)
    return out


def test_priority_first_then_fifo() -> None:
    s = TaskScheduler(aging_interval_s=1e9)
    for i, p in enumerate([L, M, H, L, H, M]):
        s.enqueue(_item(f"{p.name}{i}", p, at=i), now=10)
    assert _drain(s, now=10) == ["HIGH2", "HIGH4", "MEDIUM1", "MEDIUM5", "LOW0", "LOW3"]


def test_one_rounds_choices_scanning_each_lane_once_match_a_full_scan() -> None:
    # Given lanes of three priorities, and some tasks another plan of the round took
    # or that were cancelled
    s = TaskScheduler(aging_interval_s=1e9)
    for i in range(60):
        s.enqueue(_item(f"t{i}", [H, M, L][i % 3], at=i), now=100)
    for i in (3, 4, 10):
        s.remove(f"t{i}")
    taken_elsewhere = {"t0", "t6", "t7", "t30"}

    def choose(skip: dict[int, int] | None) -> list[str]:
        # a lease plan: picks one by one, each excluded from the next pick (not popped)
        exclude, chosen = set(taken_elsewhere), []
        while (item := s.peek_best(["t"], 100, exclude=exclude, skip=skip)) is not None:
            exclude.add(item.task_id)
            chosen.append(item.task_id)
        return chosen
    # When a round remembers how far it scanned each lane
    remembered = choose({})
    # Then it chooses exactly what rescanning every lane from its front chooses
    assert remembered == choose(None)
    assert remembered[:3] == ["t9", "t12", "t15"]  # HIGH first, past the taken and gone
    assert len(remembered) == 60 - 3 - 4
    assert [t for t in remembered if t in taken_elsewhere] == []


def test_aging_lets_old_low_work_overtake_fresh_high_work() -> None:
    # Given LOW work that has waited more than two aging intervals
    s = TaskScheduler(aging_interval_s=10)
    s.enqueue(_item("low", L, at=0), now=0)
    s.enqueue(_item("high", H, at=19), now=19)
    # Then it still yields to HIGH work queued within two intervals of it...
    assert s.peek_best(["t"], now=19).task_id == "high"  # type: ignore[union-attr]
    s.enqueue(_item("high-late", H, at=25), now=25)
    # ...and overtakes HIGH work queued more than two intervals after it
    assert _drain(s, now=26) == ["high", "low", "high-late"]


def test_delayed_items_wait_for_not_before() -> None:
    s = TaskScheduler()
    s.enqueue(_item("later", H, at=0, not_before=5), now=0)
    s.enqueue(_item("now", L, at=0), now=0)
    assert _drain(s, now=1) == ["now"]
    assert s.stats(now=1).delayed == 1
    assert _drain(s, now=5) == ["later"]


def test_admission_control_and_removal() -> None:
    s = TaskScheduler(queue="q", max_queue_size=2)
    s.enqueue(_item("a", M, 0), now=0)
    s.enqueue(_item("b", M, 0), now=0)
    with pytest.raises(QueueFullError, match="queue 'q' is full"):
        s.enqueue(_item("c", M, 0), now=0)
    s.enqueue(_item("c", M, 0), now=0, force=True)  # recovery never refuses stored work
    assert s.remove("a") and not s.remove("a")
    assert _drain(s, now=0) == ["b", "c"]


def test_only_requested_types_and_concurrency_limits() -> None:
    s = TaskScheduler()
    s.enqueue(_item("x1", H, 0, task_type="x"), now=0)
    s.enqueue(_item("x2", H, 1, task_type="x"), now=0)
    s.enqueue(_item("y1", L, 0, task_type="y"), now=0)
    assert s.peek_best(["y"], now=0).task_id == "y1"  # type: ignore[union-attr]
    first = s.peek_best(["x"], now=0, limits={"x": 1})
    assert first is not None
    s.pop(first)
    s.grant(first, token=1, executor_id="e", deadline=10)
    assert s.peek_best(["x"], now=0, limits={"x": 1}) is None  # x is at its limit
    s.release("x1", 1)
    assert s.peek_best(["x"], now=0, limits={"x": 1}).task_id == "x2"  # type: ignore[union-attr]


def test_leases_renew_expire_and_fence() -> None:
    s = TaskScheduler()
    item = _item("a", M, 0)
    s.enqueue(item, now=0)
    s.pop(item)
    s.grant(item, token=7, executor_id="e", deadline=10)
    assert not s.renew("a", token=6, deadline=20)  # stale token
    assert s.renew("a", token=7, deadline=20)
    assert s.expired(now=15) == []
    assert [r.task_id for r in s.expired(now=21)] == ["a"]
    assert s.release("a", token=6) is None
    assert s.release("a", token=7) is not None and "a" not in s


def test_fair_share_between_owners_within_a_priority() -> None:
    # Given alice's backlog of ten tasks, queued before bob's single one
    s = TaskScheduler(aging_interval_s=30)
    for i in range(10):
        s.enqueue(QueuedTask(f"a{i}", "t", M, enqueued_at=0.0, owner="alice"), now=0)
    s.enqueue(QueuedTask("b0", "t", M, enqueued_at=1.0, owner="bob"), now=1)
    # When tasks are leased one by one, then bob's goes second, not eleventh
    order = []
    for step in range(4):
        item = s.peek_best(["t"], now=2 + step)
        assert item is not None
        s.pop(item, now=2 + step)
        order.append(item.task_id)
    assert order == ["a0", "b0", "a1", "a2"]
    # And an owner at its quota is passed over
    s.enqueue(QueuedTask("b1", "t", M, enqueued_at=9.0, owner="bob"), now=9)
    assert s.peek_best(["t"], now=10, admit=lambda owner, _t: owner != "alice").task_id == "b1"  # type: ignore[union-attr]


def test_stats_follow_tasks_as_they_come_and_go() -> None:
    s = TaskScheduler()
    s.enqueue(_item("a", H, at=0), now=0)
    s.enqueue(_item("b", L, at=1, task_type="u"), now=1)
    s.enqueue(_item("c", L, at=2, not_before=50), now=2)
    s.enqueue(_item("d", M, at=3), now=3)
    s.remove("d")
    s.reprioritise("b", H, now=4)
    stats = s.stats(now=10)
    assert stats.waiting == {"HIGH": 2, "MEDIUM": 0, "LOW": 0} and stats.delayed == 1
    assert stats.waiting_by_type == {"t": 1, "u": 1} and stats.oldest_wait_s == 10
    first = s.peek_best(["t", "u"], now=10)
    assert first is not None
    s.pop(first, now=10)
    after = s.stats(now=60)  # c came due
    assert after.waiting == {"HIGH": 1, "MEDIUM": 0, "LOW": 1} and after.delayed == 0


def test_each_arrival_wakes_one_waiting_executor() -> None:
    async def scenario() -> list[int]:
        arrivals = Arrivals()
        woken: list[int] = []

        async def executor(n: int, types: list[str]) -> None:
            await arrivals.wait(f"e{n}", types, timeout_s=5.0)
            woken.append(n)

        # Given three idle executors of one type, the third also waiting for another type
        waiting = [asyncio.create_task(executor(1, ["a"])), asyncio.create_task(executor(2, ["a"])),
                   asyncio.create_task(executor(3, ["a", "b"]))]
        await asyncio.sleep(0)
        counts = []
        # When one task arrives, one executor wakes, one that waits for that type only
        # (the third stays for the other type); the others sleep on
        arrivals.arrived("a")
        await asyncio.sleep(0.01)
        counts.append(len(woken))
        # When two more arrive (one of the other type), every executor has woken once
        arrivals.arrived("b")
        arrivals.arrived("a")
        await asyncio.sleep(0.01)
        counts.append(len(woken))
        # And an arrival with nobody waiting wakes nobody later
        arrivals.arrived("a")
        await asyncio.gather(*waiting)
        counts.append(len(set(woken)))
        return counts

    assert asyncio.run(scenario()) == [1, 3, 3]


def test_a_waiting_executor_is_lent_once_and_woken_no_more() -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        arrivals = Arrivals()
        # Given an executor waiting for work of one type
        waiting = asyncio.create_task(arrivals.wait("e1", ["a"], timeout_s=5.0))
        await asyncio.sleep(0)
        # When it is lent, its wait ends with the loan it was given
        lent = arrivals.lend("a", lambda executor_id: Loan("l1", executor_id, "a", 0, 1.0, 10.0))
        answer = await waiting
        # and nobody else waits to be lent, nor woken by an arrival
        again = arrivals.lend("a", lambda executor_id: Loan("l2", executor_id, "a", 0, 1.0, 10.0))
        arrivals.arrived("a")
        return lent, answer, again

    lent, answer, again = asyncio.run(scenario())
    assert lent is not None and lent.executor_id == "e1" and answer == lent and again is None


def test_within_a_priority_the_least_slack_goes_first() -> None:
    s = TaskScheduler(aging_interval_s=30.0)

    def task(task_id: str, priority: TaskPriority, deadline: float | None = None,
             estimate_s: float = 0.0, at: float = 0.0) -> QueuedTask:
        return QueuedTask(task_id, "t", priority, enqueued_at=at, deadline=deadline,
                          estimate_s=estimate_s)

    # Given HIGH tasks: one without a deadline queued first, one due at 100 s that runs
    # 10 s, and one queued later, due at 200 s but running 150 s (less slack than the first)
    s.enqueue(task("plain", TaskPriority.HIGH, at=0.0), 0.0)
    s.enqueue(task("due100", TaskPriority.HIGH, deadline=100.0, estimate_s=10.0, at=1.0), 1.0)
    s.enqueue(task("due200", TaskPriority.HIGH, deadline=200.0, estimate_s=150.0, at=2.0), 2.0)
    # and a MEDIUM task due very soon, and a LOW task without a deadline
    s.enqueue(task("urgent-medium", TaskPriority.MEDIUM, deadline=10.0, at=3.0), 3.0)
    s.enqueue(task("low", TaskPriority.LOW, at=3.0), 3.0)
    # When they are leased one by one at 5 s
    order = []
    while (item := s.peek_best(["t"], now=5.0)) is not None:
        s.pop(item, now=5.0)
        order.append(item.task_id)
    # Then the HIGH tasks go by slack (50 s before 90 s, then the one without a deadline),
    # the MEDIUM one does not pass a HIGH one however urgent, and LOW comes last
    assert order == ["due200", "due100", "plain", "urgent-medium", "low"]


def test_aging_still_lifts_a_task_without_a_deadline_past_newer_deadline_work() -> None:
    s = TaskScheduler(aging_interval_s=30.0)
    # Given a LOW task that has waited two aging intervals (it counts as HIGH now)
    s.enqueue(QueuedTask("old-low", "t", TaskPriority.LOW, enqueued_at=0.0), 0.0)
    # and a fresh MEDIUM task with a deadline
    s.enqueue(QueuedTask("fresh-medium", "t", TaskPriority.MEDIUM, enqueued_at=60.0,
                         deadline=500.0), 60.0)
    # Then the aged LOW task goes first: a deadline orders within a level, aging still lifts
    item = s.peek_best(["t"], now=60.5)
    assert item is not None and item.task_id == "old-low"
