"""The executor's work loop without Ray: a link the test plays the manager with."""

from __future__ import annotations

import json
from typing import Any

from raytasks.executor import TaskExecutor
from raytasks.messages import (
    Lease,
    LeaseRequest,
    LogLine,
    ProgressReport,
    RenewAnswer,
    Report,
    ReportAnswer,
)
from raytasks.registry import TaskTypeSpec
from raytasks.settings import Settings


class Backlog:
    """A manager with ``waiting`` tasks of one type: leases what is asked, records the asks."""

    def __init__(self, waiting: int, stop_after: int) -> None:
        self.waiting, self.stop_after = waiting, stop_after
        self.asked: list[int] = []
        self.leased: list[int] = []
        self.reported: list[Report] = []
        self.executor: Any = None

    def report_and_lease(self, request: LeaseRequest) -> list[Lease]:
        self.reported += request.reports
        self.asked.append(request.n)
        if len(self.asked) >= self.stop_after:
            self.executor.stop()
        n = min(request.n, self.waiting)
        self.waiting -= n
        self.leased.append(n)
        return [Lease(task_id=f"t{len(self.asked)}-{i}", task_type="noop", token=1,
                      attempt=0, parameters=json.dumps({}), timeout_s=None,
                      deadline=1e12) for i in range(n)]

    def report(self, reports: list[Report]) -> ReportAnswer:
        return ReportAnswer(accepted=[r.task_id for r in reports], rejected=[])

    def heartbeat(self, executor_id: str, leases: list[tuple[str, int]],
                  progress: list[ProgressReport], logs: list[LogLine]) -> RenewAnswer:
        return RenewAnswer()

    def checkpoint(self, task_id: str) -> Any:
        return None

    def save_checkpoint(self, task_id: str, token: int, state: Any) -> bool:
        return True

    def type_blob(self, name: str) -> bytes:
        return TaskTypeSpec(name, lambda params, ctx: 1).dumps()


def test_tiny_tasks_are_leased_in_batches_that_grow_from_one(tmp_path: Any) -> None:
    # Given a backlog of tiny tasks and an executor whose run-time estimate says "tiny"
    link = Backlog(waiting=1000, stop_after=10)
    executor = TaskExecutor("e1", "noop", Settings(data_dir=tmp_path, lease_batch_max=128),
                            link, start=False)
    link.executor = executor
    executor._avg_run_s = 1e-5
    # When it works through them
    executor._work_loop()
    # Then the first lease takes one task, whatever the estimate, and each next one at
    # most twice what the last one brought (the run times seen cap it too)
    assert link.asked[0] == 1
    assert all(ask <= 2 * last for ask, last in zip(link.asked[1:], link.leased, strict=False))
    assert max(link.asked) >= 16  # and tiny tasks still go in batches
    assert all(r.outcome == "completed" for r in link.reported)
    assert len(link.reported) == sum(link.asked[:-1])


def test_after_an_idle_lease_the_next_one_starts_small_again(tmp_path: Any) -> None:
    # Given an executor that ran big batches, then found the queue empty
    link = Backlog(waiting=0, stop_after=2)
    executor = TaskExecutor("e1", "noop", Settings(data_dir=tmp_path, lease_batch_max=128),
                            link, start=False)
    link.executor = executor
    executor._avg_run_s, executor._last_leased = 1e-5, 128
    executor._work_loop()
    # Then the lease after the empty one asks for one task, not a full batch
    assert link.asked == [128, 1]
