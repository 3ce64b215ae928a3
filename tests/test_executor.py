"""The executor's work loop without Ray: a link the test plays the manager with."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from raytasks.executor import TaskExecutor
from raytasks.messages import (
    Lease,
    LeaseRequest,
    Loan,
    LogLine,
    ProgressReport,
    RenewAnswer,
    Report,
    ReportAnswer,
    Work,
)
from raytasks.registry import TaskTypeSpec
from raytasks.settings import Settings
from tests.conftest import wait_for


class Backlog:
    """A manager with ``waiting`` tasks of one type: leases what is asked, records the asks."""

    def __init__(self, waiting: int, stop_after: int) -> None:
        self.waiting, self.stop_after = waiting, stop_after
        self.asked: list[int] = []
        self.leased: list[int] = []
        self.reported: list[Report] = []
        self.executor: Any = None

    def report_and_lease(self, request: LeaseRequest) -> Work:
        self.reported += request.reports
        self.asked.append(request.n)
        if len(self.asked) >= self.stop_after:
            self.executor.stop()
        n = min(request.n, self.waiting)
        self.waiting -= n
        self.leased.append(n)
        return Work([Lease(task_id=f"t{len(self.asked)}-{i}", task_type="noop", token=1,
                           attempt=0, parameters=json.dumps({}), timeout_s=None,
                           deadline=1e12) for i in range(n)])

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

    def ledger(self, lease: Lease) -> None:
        return None


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


class SlowTracker(Backlog):
    """One task that prints and sleeps; a tracker that takes 0.6 s to store a beat's lines.

    Records when each line was stored and when the report reached the manager."""

    def __init__(self) -> None:
        super().__init__(waiting=1, stop_after=2)
        self.stored: dict[str, float] = {}
        self.reported_at = 0.0

    def report_and_lease(self, request: LeaseRequest) -> Work:
        if request.reports:
            self.reported_at = time.monotonic()
        return super().report_and_lease(request)

    def heartbeat(self, executor_id: str, leases: list[tuple[str, int]],
                  progress: list[ProgressReport], logs: list[LogLine]) -> RenewAnswer:
        if logs:
            time.sleep(0.6)
            for line in logs:
                self.stored[line.line] = time.monotonic()
        return RenewAnswer()

    def type_blob(self, name: str) -> bytes:
        def chatty(params: Any, ctx: Any) -> int:
            print("loading bars")
            time.sleep(0.4)
            return 1
        return TaskTypeSpec(name, chatty).dumps()


def test_a_report_waits_for_the_heartbeat_carrying_its_lines(tmp_path: Any,
                                                             monkeypatch: Any) -> None:
    import logging
    import sys

    # the executor captures this process's output as an actor does: undone afterwards
    root = logging.getLogger()
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    # Given a heartbeat that took the attempt's first lines and is slow to store them
    link = SlowTracker()
    executor = TaskExecutor("e1", "noop", Settings(data_dir=tmp_path,
                                                   heartbeat_interval_s=0.1),
                            link, exit_process=lambda code: None)
    link.executor = executor
    wait_for(lambda: link.reported_at, timeout_s=10, what="the report")
    executor.stop()
    # Then the report reached the manager only after those lines were stored (the store
    # fences lines by the lease, which the report ends)
    started = next(line for line in link.stored if "started on e1" in line)
    assert "loading bars" in link.stored
    assert link.reported_at >= link.stored[started]


class Lender(Backlog):
    """A manager that lends the executor to a client at its first call for work, then
    has nothing; records heartbeats and reports."""

    def __init__(self, duration_s: float) -> None:
        super().__init__(waiting=0, stop_after=1000)
        self.loan = Loan("loan-1", "e1", "noop", 0, duration_s, 10.0)
        self.beats: list[list[tuple[str, int]]] = []
        self.lent = False

    def report_and_lease(self, request: LeaseRequest) -> Work:
        self.reported += request.reports
        if not self.lent:
            self.lent = True
            return Work(loan=self.loan)
        time.sleep(0.05)
        return Work()

    def report(self, reports: list[Report]) -> ReportAnswer:
        self.reported += reports
        return super().report(reports)

    def heartbeat(self, executor_id: str, leases: list[tuple[str, int]],
                  progress: list[ProgressReport], logs: list[LogLine]) -> RenewAnswer:
        if leases:
            self.beats.append(leases)
        return RenewAnswer()

    def type_blob(self, name: str) -> bytes:
        return TaskTypeSpec(name, lambda params, ctx: time.sleep(params["s"]) or 1).dumps()


def _lent_lease(task_id: str, seconds: float) -> Lease:
    return Lease(task_id=task_id, task_type="noop", token=1, attempt=0,
                 parameters=json.dumps({"s": seconds}), timeout_s=None, deadline=1e12)


def test_a_lent_executor_runs_its_clients_tasks_and_only_during_the_loan(
        tmp_path: Any) -> None:
    # Given an executor the manager lent to a client for a second and a half
    link = Lender(duration_s=1.5)
    executor = TaskExecutor("e1", "noop", Settings(data_dir=tmp_path,
                                                   heartbeat_interval_s=0.1),
                            link, exit_process=lambda code: None)
    link.executor = executor
    wait_for(lambda: executor.state()["lent"], timeout_s=10, what="the loan")
    try:
        # When the client sends a short task under the loan, its report comes back to it
        taken, report = executor.run_lent("loan-1", _lent_lease("short", 0.0))
        assert taken and report is not None and report.outcome == "completed"
        # and under another loan's id, nothing runs
        assert executor.run_lent("loan-2", _lent_lease("other", 0.0)) == (False, None)
        # A run that a heartbeat carried is known to the manager: its report goes there
        taken, report = executor.run_lent("loan-1", _lent_lease("long", 0.4))
        assert taken and report is None
        assert any(("long", 1) in beat for beat in link.beats)
        assert [r.task_id for r in link.reported if r.outcome == "completed"] == ["long"]
        # Once the loan is over, the executor calls for work again and takes no lent run
        wait_for(lambda: not executor.state()["lent"], timeout_s=10, what="the loan's end")
        assert executor.run_lent("loan-1", _lent_lease("late", 0.0)) == (False, None)
    finally:
        executor.stop()


class OneTask(Backlog):
    """A manager that leases ``lease`` once, then nothing; records the reports."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(waiting=0, stop_after=1000)
        self.lease: Lease | None = lease

    def report_and_lease(self, request: LeaseRequest) -> Work:
        self.reported += request.reports
        lease, self.lease = self.lease, None
        if lease is None:
            time.sleep(0.05)
            return Work()
        return Work([lease])

    def report(self, reports: list[Report]) -> ReportAnswer:
        self.reported += reports
        return super().report(reports)


class Burner(OneTask):
    """One task whose handler spins on the CPU for ``params['s']`` seconds."""

    def __init__(self, max_cpu_s: float | None) -> None:
        super().__init__(Lease(task_id="burn", task_type="spin", token=1, attempt=0,
                               parameters=json.dumps({"s": 0.6}), timeout_s=None,
                               deadline=1e12, max_cpu_s=max_cpu_s))

    def type_blob(self, name: str) -> bytes:
        def spin(params: Any, ctx: Any) -> int:
            until, blob = time.process_time() + params["s"], bytearray(50 << 20)
            while time.process_time() < until:
                pass
            return len(blob)
        return TaskTypeSpec(name, spin).dumps()


@pytest.mark.parametrize("max_cpu_s", [None, 0.2])
def test_an_attempt_reports_what_it_used_and_is_stopped_past_its_cpu_limit(
        tmp_path: Any, max_cpu_s: float | None) -> None:
    # Given a task that spins 0.6 CPU seconds holding 50 MiB, without a CPU limit or with
    # one of 0.2 s
    link = Burner(max_cpu_s)
    exits: list[int] = []
    executor = TaskExecutor("e1", "spin", Settings(data_dir=tmp_path), link,
                            exit_process=exits.append)
    link.executor = executor
    try:
        wait_for(lambda: link.reported, timeout_s=20, what="the report")
    finally:
        executor.stop()
    (report,) = link.reported
    assert report.cpu_s is not None and report.peak_rss_bytes is not None
    assert report.peak_rss_bytes > 50 << 20
    if max_cpu_s is None:
        # Then it completed, having used what it spun (and a little more)
        assert report.outcome == "completed" and 0.6 <= report.cpu_s < 3
    else:
        # Then it was stopped as a timeout is, past its limit and well before its end
        assert report.outcome == "failed" and report.error is not None
        assert report.error.reason == "cpu_limit" and 0.2 < report.cpu_s < 0.6
        assert exits == [1]
