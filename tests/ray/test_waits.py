"""Every waiter learns its task's end: after a manager kill too, a wait on a finished task
returns within seconds, whatever the client did with its wait stream before."""

from __future__ import annotations

import time
from typing import Any

import ray

from raytasks import TaskCreateRequest, TaskManager, TaskStatus, register_task_type
from raytasks.runtime import MANAGER
from tests.conftest import wait_for
from tests.helpers import SleepParams, sleepy


def _sleep(seconds: float) -> TaskCreateRequest:
    return TaskCreateRequest(name="nap", task_type="sleepy", parameters={"seconds": seconds})


def _kill_manager(service: Any) -> None:
    """SIGKILL the manager's process (Ray starts a new one, which reconciles)."""
    ray.kill(service.handle(MANAGER), no_restart=False)


async def test_waits_after_a_manager_kill_find_tasks_that_finished_before_it(
        service: Any) -> None:
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=2, runtime=service)
    tm = TaskManager(service)
    # Given a client that has waited before (its wait stream is in use)
    earlier = [await tm.submit(_sleep(0.0)) for _ in range(30)]
    await tm.wait_all([t.id for t in earlier], timeout_s=60)
    # and 20 lone tasks submitted one after another, nobody waiting for them yet
    tasks = [await tm.submit(_sleep(0.3)) for _ in range(20)]
    wait_for(lambda: all(tm.get_task_sync(t.id).status is TaskStatus.COMPLETED
                         for t in tasks), timeout_s=60, what="the tasks to finish")
    # When the manager's process is killed
    _kill_manager(service)
    # Then a wait on each returns its end within seconds (not the wait's whole timeout)
    for task in tasks:
        started = time.monotonic()
        done = await tm.wait(task.id, timeout_s=30)
        assert done.status is TaskStatus.COMPLETED and done.attempt == 0
        assert time.monotonic() - started < 15, task.id
