"""The client's fast path without Ray: coalesced calls, and one wait stream per client,
against a real TaskManagerCore running on an event loop of its own."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from raytasks.client import AsyncCombiner, ClientTypes, Combiner, Watcher, compact
from raytasks.errors import InvalidParametersError, TaskNotFoundError
from raytasks.manager import TaskManagerCore
from raytasks.messages import LeaseRequest, Report
from raytasks.models import TaskCreateRequest, TaskStatus
from raytasks.registry import TaskTypeSpec
from raytasks.settings import Settings


def test_a_lone_call_goes_at_once_and_concurrent_calls_go_together() -> None:
    sent: list[list[int]] = []
    gate = threading.Event()

    def send(items: list[int]) -> list[Any]:
        sent.append(items)
        if len(sent) == 1:
            gate.wait(5)  # the first call is in flight while the others arrive
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    combiner: Combiner[int, int] = Combiner(send)
    assert combiner.call(0) == 0 and sent == [[0]]  # alone: sent by its caller, at once
    sent.clear()
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(combiner.call, 2)
        while not sent:
            time.sleep(0.001)
        rest = [pool.submit(combiner.call, i) for i in range(3, 9)]
        while len(combiner._queue) < 6:
            time.sleep(0.001)
        gate.set()
        assert first.result() == 20
        outcomes = []
        for future in rest:
            try:
                outcomes.append(future.result())
            except ValueError as exc:
                outcomes.append(str(exc))
    # Then the six that waited went in one call, and an error failed only its own caller
    assert sent == [[2], [3, 4, 5, 6, 7, 8]]
    assert outcomes == ["odd 3", 40, "odd 5", 60, "odd 7", 80]


async def test_async_calls_of_one_turn_go_together_and_later_ones_wait_for_the_next() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> list[Any]:
        sent.append(items)
        await asyncio.sleep(0.01)
        return [i + 1 for i in items]

    combiner: AsyncCombiner[int, int] = AsyncCombiner(send)
    first = asyncio.gather(*(combiner.call(i) for i in range(3)))  # one turn of the loop
    await asyncio.sleep(0.002)  # their call is in flight
    later = asyncio.gather(*(combiner.call(i) for i in range(3, 5)))
    assert await first == [1, 2, 3] and await later == [4, 5]
    assert sent == [[0, 1, 2], [3, 4]]


def test_client_validation_names_the_field_as_the_manager_does() -> None:
    types = ClientTypes()
    with pytest.raises(InvalidParametersError, match=r"requests\[1\]\.parameters\.stock_code"):
        compact([TaskCreateRequest(name="a", task_type="prediction",
                                   parameters={"stock_code": "000001.SZ"}),
                 TaskCreateRequest(name="b", task_type="prediction",
                                   parameters={"stock_code": "bad"})], types, 1 << 20)
    (packed,) = compact([TaskCreateRequest(name="a", task_type="prediction",
                                           parameters={"stock_code": "000001.SZ"})],
                        types, 1 << 20)
    assert packed.checked_version == 0 and packed.parameters["days"] == 5  # defaults filled
    (unknown,) = compact([TaskCreateRequest(name="c", task_type="custom")], types, 1 << 20)
    assert unknown.checked_version is None  # the manager validates what the client cannot


class Served:
    """A TaskManagerCore on an event loop in a thread; blocking calls as a client makes."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.core: TaskManagerCore = self.run(self._make(tmp_path))

    async def _make(self, tmp_path: Path) -> TaskManagerCore:
        core = TaskManagerCore(Settings(data_dir=tmp_path))
        core.registry.register(TaskTypeSpec("noop", lambda p, c: None))
        core.reconcile()
        return core

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.core.close()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def _watcher(served: Served, **calls: Any) -> Watcher:
    """A watcher on the served core: its watch, its stream and reads of the store."""
    core = served.core
    return Watcher(calls.get("watch", lambda s, ids: served.run(core.watch(s, ids))),
                   calls.get("poll", lambda s, t: served.run(core.finished_ids(s, t))),
                   lambda ids: served.run(core.get_many(ids)))


def _run_all(served: Served, n: int) -> None:
    """An executor runs ``n`` queued noop tasks to completion."""
    core = served.core
    work = served.run(core.report_and_lease(LeaseRequest(uuid.uuid4().hex, "e", ["noop"], n)))
    served.run(core.report([Report(x.task_id, x.token, "completed", result="7")
                            for x in work.leases]))


def _noop(served: Served, n: int = 1) -> list[str]:
    tasks = served.run(served.core.create([TaskCreateRequest(name="n", task_type="noop")
                                           for _ in range(n)],
                                          [uuid.uuid4().hex for _ in range(n)], True))
    return [t.id for t in tasks]


def test_every_wait_of_a_client_rides_one_stream(served: Served) -> None:
    watcher = _watcher(served)
    ids = _noop(served, 3)
    # Given waits on three tasks and one id that does not exist
    futures = watcher.futures(ids)
    missing = watcher.futures(["f" * 32])[0]
    assert isinstance(missing.exception(5), TaskNotFoundError)
    # When an executor runs them
    _run_all(served, 5)
    # Then each wait gets its finished task, from one session on the manager
    done = [f.result(10) for f in futures]
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 3 and done[0].result == 7
    assert len(served.core.sessions) == 1
    # And a wait for a task that finished long ago is answered at once
    assert watcher.futures([ids[0]])[0].result(5).id == ids[0]


def test_the_stream_survives_a_manager_that_forgot_the_session(served: Served) -> None:
    forgot = {"once": True}

    def poll(session: str, timeout_s: float) -> Any:
        if forgot.pop("once", False):
            return None  # as a restarted manager answers
        return served.run(served.core.finished_ids(session, timeout_s))

    watcher = _watcher(served, poll=poll)
    (task_id,) = _noop(served)
    future = watcher.futures([task_id])[0]
    _run_all(served, 1)
    assert future.result(15).status is TaskStatus.COMPLETED


def test_an_answer_the_stream_lost_is_asked_for_again(served: Served) -> None:
    # Given a stream whose poll takes the finished ids from the manager, then fails
    # before they reach the client (a manager killed as it answers, a call cut off)
    lost = {"once": True}

    def poll(session: str, timeout_s: float) -> Any:
        ids = served.run(served.core.finished_ids(session, timeout_s))
        if ids and lost.pop("once", False):
            raise ConnectionError("the answer was lost on the way")
        return ids

    watcher = _watcher(served, poll=poll)
    first, second = _noop(served, 2)
    futures = watcher.futures([first, second])
    # When the tasks finish and that answer is lost
    _run_all(served, 2)
    # Then every waiter still learns its task's end (the tasks are watched again)
    assert [f.result(10).status for f in futures] == [TaskStatus.COMPLETED] * 2
    # and a wait that comes later, on a task whose end went by in a lost answer, too
    third = _noop(served)[0]
    watcher.futures([third])
    lost["once"] = True
    _run_all(served, 1)
    assert watcher.futures([third])[0].result(10).status is TaskStatus.COMPLETED
