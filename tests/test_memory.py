"""Out of memory without Ray: the guard's rule, the attempt record, the retry decision, and
an executor stopping an attempt past its type's memory ceiling (``tests/ray/test_oom.py``
runs the whole of it on a real Ray whose memory monitor kills)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from raytasks.executor import TaskExecutor
from raytasks.manager.outcomes import decide
from raytasks.manager.state import Entry
from raytasks.memory import (
    MIB,
    AttemptRecord,
    MemoryWatch,
    NodeMemory,
    guard_reason,
    oom_error,
    ray_kill_line,
)
from raytasks.messages import Lease, Report
from raytasks.models import TaskPriority, TaskStatus
from raytasks.registry import TaskTypeSpec
from raytasks.settings import Settings, TaskTypeSettings
from tests.conftest import wait_for
from tests.test_executor import OneTask

GIB = 1024 * MIB


def test_rays_kill_line_is_read_as_ray_reads_it() -> None:
    # Given a 16 GiB node, Then Ray's default is 95 %, a threshold moves it, and a minimum
    # of free bytes keeps the higher of the two lines
    assert ray_kill_line(16 * GIB, {}) == int(16 * GIB * 0.95)
    assert ray_kill_line(16 * GIB, {"RAY_memory_usage_threshold": "0.5"}) == 8 * GIB
    assert ray_kill_line(16 * GIB, {"RAY_memory_usage_threshold": "0.5",
                                    "RAY_min_memory_free_bytes": str(GIB)}) == 15 * GIB


def test_the_guard_stops_past_the_ceiling_or_the_attempt_that_alone_crossed_the_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.5")  # Ray kills past 8 GiB of 16
    monkeypatch.delenv("RAY_min_memory_free_bytes", raising=False)
    calm, pressed = NodeMemory(16 * GIB, 6 * GIB), NodeMemory(16 * GIB, 7 * GIB + 800 * MIB)
    # Then a type's ceiling is held whatever the node's state
    assert "300 MiB" in (guard_reason(301 * MIB, 50 * MIB, 300, None, calm) or "")
    assert guard_reason(299 * MIB, 50 * MIB, 300, None, calm) is None
    # And on a node 288 MiB past the guard line (512 MiB under Ray's), the attempt that
    # grew by more than that is stopped, one that grew less is not, nor anything when
    # the node is calm or the guard is off
    assert "grew the most" in (guard_reason(600 * MIB, 100 * MIB, None, 512, pressed) or "")
    assert guard_reason(300 * MIB, 100 * MIB, None, 512, pressed) is None
    assert guard_reason(600 * MIB, 100 * MIB, None, 512, calm) is None
    assert guard_reason(600 * MIB, 100 * MIB, None, None, pressed) is None


def test_an_attempt_killed_by_rays_monitor_is_reported_from_its_record(tmp_path: Path) -> None:
    # Given the record a previous process of the executor left of its attempt
    record = tmp_path / "executor:hog:0.json"
    AttemptRecord(pid=os.getpid() + 1, task_id="t1", token=7, peak_rss_bytes=900 * MIB,
                  cpu_s=1.5, run_s=2.0).save(record)
    watch = MemoryWatch(None, None, record)
    # When Ray says its memory monitor killed that process (holding 950 MiB)
    report = watch.recover(lambda pid: ("1 worker(s) were killed due to the node running "
                                        "low on memory.\nsecond line", 950 * MIB))
    # Then the attempt is reported failed under its own lease, out of memory, with the peak
    assert report is not None and report.error is not None
    assert (report.task_id, report.token, report.outcome) == ("t1", 7, "failed")
    assert report.error.reason == "out_of_memory" and report.peak_rss_bytes == 950 * MIB
    assert "peak 950 MiB" in report.error.message and "second line" not in report.error.message
    assert not record.exists()
    # And a process that died otherwise leaves its lease to run out (reported as lost)
    AttemptRecord(os.getpid() + 1, "t2", 8, MIB, 0.1, 0.1).save(record)
    assert watch.recover(lambda pid: None) is None and not record.exists()
    # And a record of this very process is no death at all
    AttemptRecord(os.getpid(), "t3", 9, MIB, 0.1, 0.1).save(record)
    assert watch.recover(lambda pid: ("killed", 1)) is None


def _entry(max_retries: int) -> Entry:
    return Entry(task_id="t", task_type="hog", status=TaskStatus.RUNNING,
                 priority=TaskPriority.MEDIUM, queue="default", attempt=0,
                 max_retries=max_retries, timeout_s=None, parameters="{}", owner=None,
                 queued=False, token=1, created_at=0.0)


@pytest.mark.parametrize("retry_oom", [False, True])
def test_out_of_memory_spends_a_retry_only_where_the_type_says_so(retry_oom: bool) -> None:
    # Given a type with retries left, retrying OOM or not (the default)
    settings = Settings(task_types={"hog": TaskTypeSettings(retry_oom=retry_oom)})
    report = Report("t", 1, "failed", error=oom_error(2 * GIB, "Ray's monitor killed it"),
                    cpu_s=1.0, peak_rss_bytes=2 * GIB)
    # When an attempt ends out of memory
    change = decide(_entry(max_retries=2), report, 100.0, settings, random.Random(1))
    # Then it runs again only with retry_oom; else it is FAILED now, with reason and peak
    assert change.target is (TaskStatus.PENDING if retry_oom else TaskStatus.FAILED)
    assert change.fields["peak_rss_bytes"] == 2 * GIB
    assert json.loads(change.fields["error"])["reason"] == "out_of_memory"
    # And other failures still retry as before
    other = Report("t", 1, "failed", error=oom_error(1, "x").model_copy(update={
        "reason": "error"}))
    assert decide(_entry(2), other, 100.0, settings, random.Random(1)).target \
        is TaskStatus.PENDING


class Hog(OneTask):
    """One task that allocates 16 MiB at a time for up to 400 MiB."""

    def __init__(self) -> None:
        super().__init__(Lease(task_id="hog", task_type="hog", token=1, attempt=0,
                               parameters=json.dumps({}), timeout_s=None, deadline=1e12))

    def type_blob(self, name: str) -> bytes:
        def hog(params: Any, ctx: Any) -> int:
            held = []
            for _ in range(25):
                held.append(bytearray(16 * MIB))
                held[-1][::4096] = b"\1" * len(held[-1][::4096])
                time.sleep(0.03)
            return len(held)
        return TaskTypeSpec(name, hog).dumps()


def test_an_attempt_past_its_types_ceiling_ends_out_of_memory_with_its_peak(
        tmp_path: Path) -> None:
    # Given a type whose attempts may hold 150 MiB above what an idle executor holds, and
    # a task that grows to 400 MiB
    exits: list[int] = []
    link = Hog()
    record = tmp_path / "record.json"
    ceiling = _rss_mb() + 150
    settings = Settings(data_dir=tmp_path, task_types={"hog": TaskTypeSettings(
        max_memory_mb=ceiling)})
    executor = TaskExecutor("e1", "hog", settings, link, exit_process=exits.append,
                            record=record)
    link.executor = executor
    try:
        wait_for(lambda: link.reported, timeout_s=20, what="the report")
    finally:
        executor.stop()
    # Then it was stopped past the ceiling, before its end: out of memory, with its peak,
    # the process replaced, and no record left for the next process
    (report,) = link.reported
    assert report.outcome == "failed" and report.error is not None
    assert report.error.reason == "out_of_memory"
    assert report.peak_rss_bytes is not None
    assert ceiling * MIB < report.peak_rss_bytes < (ceiling + 100) * MIB
    assert f"{ceiling:g} MiB (max_memory_mb)" in report.error.message
    assert exits == [1] and not record.exists()


def _rss_mb() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // MIB


GIVE_BACK = """
import json
from raytasks.benchmarks.processes import rss_mb
from raytasks.runtime.manager import give_back_heap
import os
held = [bytes(2000) for _ in range(60_000)]  # ~120 MB of small blocks on the C heap
pin = bytes(2000)  # above them: free() alone cannot shrink the heap past it
del held[:]
before = rss_mb(os.getpid())
give_back_heap()
print(json.dumps({"before": before, "after": rss_mb(os.getpid()), "pin": len(pin)}))
"""


def test_the_manager_gives_the_heap_retention_freed_back_to_the_system() -> None:
    # Given a process whose freed blocks sit below one still held (as pruned rows do)
    out = subprocess.run([sys.executable, "-c", GIVE_BACK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rss = json.loads(out.stdout)
    # When the manager's maintenance gives back the heap, then RSS falls by most of it
    assert rss["before"] - rss["after"] > 80, rss
