"""``Fanout``, the one way handlers spread work over Ray, on the session's local Ray cluster."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from raytasks.context import TaskExecutionContext
from raytasks.errors import TaskCancelledError
from raytasks.runtime.fanout import Fanout


def _scaled(factor: float, seconds: float) -> float:
    """Takes ``seconds`` (the work), returns ``factor * seconds``."""
    time.sleep(seconds)
    return factor * seconds


def _context(cancel: threading.Event) -> TaskExecutionContext:
    return TaskExecutionContext("t1", "fanout", 1, {}, cancel_event=cancel)


def test_results_come_in_call_order_with_progress_per_finished_call(ray_cluster: None) -> None:
    # Given a fan-out whose shared argument is put in Ray's object store once
    fan = Fanout(_scaled, 10.0)
    assert fan.parallel
    seen: list[tuple[int, int]] = []
    # When calls that finish out of order are mapped
    results = fan.map([(0.6,), (0.0,), (0.3,)], _context(threading.Event()),
                      lambda done, total: seen.append((done, total)))
    # Then the results follow the calls, and progress counted up to every call
    assert results == [6.0, 0.0, 3.0]
    assert seen[-1] == (3, 3) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # and a second round reuses the shared argument
    assert fan.map([(0.1,)]) == [1.0]


def test_parallel_false_runs_in_this_process(ray_cluster: None) -> None:
    # Given a fan-out told not to go parallel, though Ray is up
    fan = Fanout(_scaled, 2.0, parallel=False)
    progress: list[tuple[int, int]] = []
    # When it maps
    results = fan.map([(0.0,), (0.01,)],
                      progress=lambda done, total: progress.append((done, total)))
    # Then the calls ran here: no Ray task, so no progress between them
    assert not fan.parallel and results == [0.0, 0.02] and progress == []


def test_a_cancelled_task_cancels_the_calls_still_running(ray_cluster: None) -> None:
    # Given a task cancelled while its fan-out of long calls fills every CPU
    cpus = int(ray.cluster_resources()["CPU"])
    cancel = threading.Event()
    cancel.set()
    started = time.monotonic()
    # When the fan-out waits for them
    with pytest.raises(TaskCancelledError):
        Fanout(_scaled, 1.0).map([(120.0,)] * cpus, _context(cancel))
    # Then it raises at its first look, and the calls no longer hold the CPUs: a new
    # fan-out of one call per CPU finishes long before the cancelled calls would have
    assert time.monotonic() - started < 30
    assert Fanout(_scaled, 1.0).map([(0.0,)] * cpus) == [0.0] * cpus
    assert time.monotonic() - started < 60
