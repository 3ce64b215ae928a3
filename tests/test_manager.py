"""TaskManagerCore without Ray, on both store backends, with a clock the test controls."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from raytasks.errors import (
    InvalidParametersError,
    InvalidTransitionError,
    PayloadTooLargeError,
    QueueFullError,
    TaskNotFoundError,
    UnknownTaskTypeError,
)
from raytasks.manager import TaskManagerCore
from raytasks.messages import Lease, LeaseRequest, Report, ReportAnswer
from raytasks.models import (
    Task,
    TaskCreateRequest,
    TaskErrorInfo,
    TaskPriority,
    TaskQuery,
    TaskStatus,
    TaskUpdateRequest,
)
from raytasks.registry import TaskTypeSpec
from raytasks.settings import Settings, TaskTypeSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_core(store_url: str, tmp_path: Path, clock: Clock) -> Any:
    made: list[TaskManagerCore] = []

    def make(**overrides: Any) -> TaskManagerCore:
        values: dict[str, Any] = {"data_dir": tmp_path, "store_url": store_url,
                                  "retry_backoff_base_s": 1.0, "retry_jitter": 0.0,
                                  "lease_ttl_s": 5.0}
        values.update(overrides)
        core = TaskManagerCore(Settings(**values), clock=clock)
        core.registry.register(TaskTypeSpec("noop", lambda p, c: None))
        core.reconcile()
        made.append(core)
        return core

    yield make
    for core in made:
        core.close()


@pytest.fixture
async def core(make_core: Any) -> TaskManagerCore:
    return make_core()


def req(priority: TaskPriority = TaskPriority.MEDIUM, **kw: Any) -> TaskCreateRequest:
    return TaskCreateRequest(name="n", task_type=kw.pop("task_type", "noop"),
                             priority=priority, **kw)


def unchecked(**kw: Any) -> TaskCreateRequest:
    """A request that skipped the model's validation, as a Ray client could send one."""
    return TaskCreateRequest.model_construct(name="n", task_type="noop", **kw)


async def create(core: TaskManagerCore, *requests: TaskCreateRequest,
                 enqueue: bool = True) -> list[Task]:
    return await core.create(list(requests), [uuid.uuid4().hex for _ in requests], enqueue)


async def lease(core: TaskManagerCore, n: int = 1, executor: str = "e",
                types: tuple[str, ...] = ("noop",), request_id: str | None = None) -> list[Lease]:
    work = await core.report_and_lease(LeaseRequest(
        request_id=request_id or uuid.uuid4().hex, executor_id=executor,
        task_types=list(types), n=n))
    return work.leases


async def done(core: TaskManagerCore, held: Lease, outcome: str = "completed",
               token: int | None = None) -> ReportAnswer:
    error = None if outcome == "completed" else TaskErrorInfo(type="E", message="boom")
    return await core.report([Report(held.task_id, held.token if token is None else token,
                                     outcome, result='{"ok": true}' if error is None else None,
                                     error=error)])  # type: ignore[arg-type]


async def test_invalid_input_names_the_problem(core: TaskManagerCore) -> None:
    with pytest.raises(UnknownTaskTypeError, match="unknown task type 'nope'"):
        await create(core, req(task_type="nope"))
    with pytest.raises(InvalidParametersError) as info:
        await create(core, req(task_type="prediction",
                               parameters={"stock_code": "000001", "days": 500}))
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"parameters.stock_code", "parameters.days"}
    assert "parameters.stock_code" in str(info.value)
    with pytest.raises(PayloadTooLargeError, match="over the limit"):
        await create(core, req(parameters={"blob": "x" * 2_000_000}))
    with pytest.raises(InvalidParametersError, match="depends_on"):
        await create(core, req(depends_on=["no-such-task"]))
    with pytest.raises(InvalidParametersError, match="unknown queue 'elsewhere'"):
        await create(core, req(queue="elsewhere"))
    with pytest.raises(InvalidParametersError, match="NaN"):
        await create(core, unchecked(parameters={"x": float("nan")}))
    with pytest.raises(ValidationError, match="priority"):
        TaskCreateRequest(name="n", task_type="noop", priority=7)  # type: ignore[arg-type]
    with pytest.raises(TaskNotFoundError):
        await core.get("no-such-task")
    assert core.store.status_counts() == {}  # nothing was stored by the refused requests


async def test_batch_errors_point_at_the_request(core: TaskManagerCore) -> None:
    with pytest.raises(InvalidParametersError, match=r"requests\[1\]\.parameters\.stock_code"):
        await create(core, req(task_type="prediction", parameters={"stock_code": "000001.SZ"}),
                     req(task_type="prediction", parameters={"stock_code": "bad"}))
    assert core.store.status_counts() == {}


async def test_idempotent_create_is_scoped_to_the_owner(core: TaskManagerCore) -> None:
    a = (await create(core, req(idempotency_key="k")))[0]
    b = (await create(core, req(idempotency_key="k")))[0]
    c = (await core.create([req()], [a.id], True))[0]  # a retried call carries the same id
    assert a.id == b.id == c.id
    # Given alice's key, when bob uses the same key, then bob gets a task of his own
    alice = (await create(core, req(idempotency_key="shared", owner="alice")))[0]
    bob = (await create(core, req(idempotency_key="shared", owner="bob")))[0]
    again = (await create(core, req(idempotency_key="shared", owner="alice")))[0]
    assert bob.id != alice.id and bob.owner == "bob" and again.id == alice.id
    assert core.store.status_counts() == {"PENDING": 3}


async def test_priority_order_and_fencing(core: TaskManagerCore) -> None:
    low = (await create(core, req(TaskPriority.LOW)))[0]
    high = (await create(core, req(TaskPriority.HIGH)))[0]
    (first,) = await lease(core)
    assert first.task_id == high.id
    (second,) = await lease(core)
    assert second.task_id == low.id
    assert await done(core, second, token=second.token - 1) == ReportAnswer([], [low.id])
    assert await done(core, second) == ReportAnswer([low.id], [])
    assert await done(core, second) == ReportAnswer([], [low.id])  # never twice
    finished = await core.get(low.id)
    assert finished.status is TaskStatus.COMPLETED and finished.result == {"ok": True}


async def test_retry_waits_for_backoff_then_fails_when_spent(core: TaskManagerCore,
                                                             clock: Clock) -> None:
    task = (await create(core, req(max_retries=1)))[0]
    await done(core, (await lease(core))[0], "failed")
    stored = await core.get(task.id)
    assert stored.status is TaskStatus.PENDING and stored.attempt == 1
    assert await lease(core) == []  # backoff: 1 s for the first retry
    clock.now += 1.01
    (again,) = await lease(core)
    assert again.attempt == 1
    await done(core, again, "failed")
    ended = await core.get(task.id)
    assert ended.status is TaskStatus.FAILED and ended.error is not None
    assert ended.error.message == "boom" and ended.finished_at is not None


async def test_expired_lease_is_retried_then_failed_as_lost(core: TaskManagerCore,
                                                            clock: Clock) -> None:
    task = (await create(core, req(max_retries=1)))[0]
    (held,) = await lease(core)
    clock.now += 3
    assert (await core.renew([(task.id, held.token)])).lost == []
    clock.now += 4  # renewed at +3 until +8: not yet expired
    assert await core.expire_leases() == []
    clock.now += 2
    assert await core.expire_leases() == [task.id]
    assert (await core.get(task.id)).status is TaskStatus.PENDING
    assert (await core.renew([(task.id, held.token)])).lost == [task.id]  # the old one is told
    clock.now += 2
    await lease(core)
    clock.now += 6
    await core.expire_leases()
    ended = await core.get(task.id)
    assert ended.status is TaskStatus.FAILED and ended.error is not None
    assert ended.error.reason == "lost"


async def test_restart_reconciles_from_the_store(make_core: Any, clock: Clock) -> None:
    core = make_core()
    running = (await create(core, req()))[0]
    (held,) = await lease(core)
    waiting = (await create(core, req(TaskPriority.LOW)))[0]
    created_only = (await create(core, req(TaskPriority.HIGH), enqueue=False))[0]
    # When the manager is replaced by a fresh one on the same store
    again = make_core()
    # Then queued work is queued again, unqueued work stays put, and the running
    # task's executor may still report under its token
    assert [x.task_id for x in await lease(again, 5, "e2")] == [waiting.id]
    assert (await done(again, held)).accepted == [running.id]
    assert (await again.get(created_only.id)).status is TaskStatus.PENDING


async def test_restart_during_backoff_keeps_the_backoff_and_the_wait(make_core: Any,
                                                                    clock: Clock) -> None:
    # Given a task waiting 30 s for its retry, and LOW work queued long ago
    core = make_core(retry_backoff_base_s=30.0, aging_interval_s=10.0)
    retried = (await create(core, req(TaskPriority.HIGH, max_retries=2)))[0]
    await done(core, (await lease(core))[0], "failed")
    old_low = (await create(core, req(TaskPriority.LOW)))[0]
    clock.now += 25  # old_low has aged two levels: from LOW to HIGH
    # When the manager restarts during the backoff
    again = make_core(retry_backoff_base_s=30.0, aging_interval_s=10.0)
    fresh_high = (await create(again, req(TaskPriority.HIGH)))[0]
    # Then the backoff still holds, and the old LOW task kept its place in line
    assert [x.task_id for x in await lease(again, 5)] == [old_low.id, fresh_high.id]
    clock.now += 10
    assert [x.task_id for x in await lease(again, 5)] == [retried.id]


async def test_a_retried_report_and_lease_gets_the_same_leases(make_core: Any) -> None:
    core = make_core()
    tasks = await create(core, req(), req())
    first = await lease(core, 2, request_id="call-1")
    # When Ray retries the call (same request id), in the same life...
    assert await lease(core, 2, request_id="call-1") == first
    # ...and after a manager restart, its leases come back instead of new ones
    again = make_core()
    assert [x.task_id for x in await lease(again, 2, request_id="call-1")] == \
        [x.task_id for x in first]
    assert await lease(again, 2, request_id="call-2") == []
    assert sorted((await done(again, first[0])).accepted + (await done(again, first[1])).accepted) \
        == sorted(t.id for t in tasks)


async def test_remembered_answers_hold_a_bounded_number_of_leases(
        core: TaskManagerCore, monkeypatch: pytest.MonkeyPatch) -> None:
    from raytasks.manager import parts

    # Given answers that may hold 4 leases together
    monkeypatch.setattr(parts, "LEASES_KEPT", 4)
    await create(core, *[req() for _ in range(12)])
    # When executors lease 3 tasks a call, four times
    calls = [await lease(core, 3, executor=f"e{i}", request_id=f"call-{i}") for i in range(4)]
    # Then the oldest answers are forgotten, and the leases kept stay near the bound (the
    # memory of a long run stays flat: it held 1,024 answers of up to 128 leases before)
    assert sum(len(a) for a in core.parts.answers.values()) <= 4
    assert "call-0" not in core.parts.answers
    # and the latest call, the one an executor could send again, still gets its leases
    assert await lease(core, 3, executor="e3", request_id="call-3") == calls[3]


async def test_a_failed_commit_leaves_memory_as_it_was(core: TaskManagerCore) -> None:
    task = (await create(core, req()))[0]
    (held,) = await lease(core)
    real_commit = core.store.commit

    def failing(batch: Any) -> list[int]:
        raise OSError("disk full")

    core.pipeline._commit = failing
    # When the completion cannot be committed
    with pytest.raises(Exception, match="try again"):
        await done(core, held)
    # Then the lease is still held, and the executor's resent report is accepted
    assert (await core.renew([(task.id, held.token)])).lost == []
    core.pipeline._commit = real_commit
    assert (await done(core, held)).accepted == [task.id]
    assert (await core.get(task.id)).status is TaskStatus.COMPLETED


async def test_memory_behind_the_store_is_reloaded_not_trusted(core: TaskManagerCore) -> None:
    from raytasks.store.base import RowUpdate, WriteBatch

    task = (await create(core, req()))[0]
    (held,) = await lease(core)
    # Given another writer that moved the lease on behind this manager's back
    core.store.commit(WriteBatch(updates=[RowUpdate(task.id, {"lease_token": 99})]))
    # When the old attempt reports, the fenced update finds the token changed
    answer = await done(core, held)
    # Then nothing is applied, and memory now follows the store
    assert answer.accepted == []
    assert (await core.renew([(task.id, 99)])).lost == []
    assert (await core.get(task.id)).status is TaskStatus.RUNNING


async def test_cancel_update_delete_retry_rules(core: TaskManagerCore) -> None:
    first, second = await create(core, req(), req())
    (held,) = await lease(core)
    assert held.task_id == first.id
    assert (await core.cancel(first.id)).status is TaskStatus.RUNNING  # running: asked
    assert (await core.renew([(first.id, held.token)])).cancel == [first.id]
    await done(core, held, "cancelled")
    assert (await core.get(first.id)).status is TaskStatus.CANCELLED
    assert (await core.cancel(second.id)).status is TaskStatus.CANCELLED  # pending: at once
    with pytest.raises(InvalidTransitionError):
        await core.cancel(second.id)
    with pytest.raises(InvalidTransitionError, match="cannot become deleted"):
        await core.delete((await create(core, req()))[0].id)
    retried = await core.retry(second.id)
    assert retried.status is TaskStatus.PENDING and retried.attempt == 1
    await core.delete(first.id)
    with pytest.raises(TaskNotFoundError):
        await core.get(first.id)
    updated = await core.update(retried.id, TaskUpdateRequest(
        name="renamed", tags=["a"], priority=TaskPriority.HIGH))
    assert (updated.name, updated.tags, updated.priority) == ("renamed", ["a"],
                                                              TaskPriority.HIGH)
    page, total, _ = await core.query(TaskQuery(tags=["a"]))
    assert total == 1 and page[0].id == retried.id


async def test_a_completion_in_flight_beats_a_cancel(core: TaskManagerCore) -> None:
    task = (await create(core, req()))[0]
    (held,) = await lease(core)
    await core.cancel(task.id)
    # When the attempt's completion arrives after the cancel was accepted
    await done(core, held)
    # Then the work it did stands: the task is COMPLETED with its result
    ended = await core.get(task.id)
    assert ended.status is TaskStatus.COMPLETED and ended.result == {"ok": True}
    assert ended.cancel_requested


async def test_full_queue_refuses_whole_batches(make_core: Any) -> None:
    core = make_core(max_queue_size=2)
    await create(core, req())
    with pytest.raises(QueueFullError, match="1 of 2"):
        await create(core, req(), req())
    assert core.store.status_counts() == {"PENDING": 1}
    await create(core, req(), enqueue=False)  # created but not queued: admitted
    assert core.store.status_counts() == {"PENDING": 2}


async def test_room_granted_to_a_direct_client_is_held_until_used_or_expired(
        make_core: Any, clock: Clock) -> None:
    from raytasks.messages import NewTask
    from raytasks.runtime.intake import rows_of
    from raytasks.store import WriteBatch

    core = make_core(max_queue_size=40, intake_credits=100, intake_grant_ttl_s=10.0)
    # A client is granted a quarter of the room left, held against every other create
    grant = core.grant("client")
    assert grant is not None and grant.credits == {"default": 10}
    assert grant.types["noop"][0] is None  # no parameter model: nothing to have checked
    await create(core, *[req() for _ in range(30)])
    with pytest.raises(QueueFullError):
        await create(core, req())
    # Each task of its own the manager adopts takes one slot back
    ids = [uuid.uuid4().hex for _ in range(4)]
    rows = rows_of([NewTask(i, "n", "noop", {}) for i in ids], grant, clock(), "client")
    core.store.commit(WriteBatch(inserts=rows.tasks, events=rows.events, intake=rows.intake))
    await core.adopt("client", ids, {"default": 4})
    assert len(core.queues["default"]) == 34
    with pytest.raises(QueueFullError):  # 34 queued and 6 still held
        await create(core, req())
    # A notice repeated later adopts nothing twice; an expired grant holds nothing
    await core.adopt("client", ids)
    assert len(core.queues["default"]) == 34
    clock.now += 10.0
    await create(core, *[req() for _ in range(6)])
    other = core.grant("other")  # a full queue grants nothing
    assert other is not None and other.credits == {"default": 0}


async def test_a_clients_lent_runs_are_adopted_ended_and_counted_once(
        make_core: Any, clock: Clock) -> None:
    from raytasks.messages import NewTask
    from raytasks.runtime.intake import rows_of
    from raytasks.runtime.loans import _commit_completion
    from raytasks.store import WriteBatch

    core = make_core()
    grant = core.grant("client")
    assert grant is not None

    def run(task_id: str) -> dict[str, Any]:
        """What a client commits as it sends a lone task to an executor lent to it."""
        rows = rows_of([NewTask(task_id, "n", "noop", {})], grant, clock(), "client",
                       "executor:noop:0")
        core.store.commit(WriteBatch(inserts=rows.tasks, events=rows.events,
                                     intake=rows.intake))
        return rows.tasks[0]

    def complete(row: dict[str, Any]) -> None:
        _commit_completion(core.store, row, Report(row["id"], 1, "completed", result="1"))

    # Given a lent run the manager has never heard of, its executor's first heartbeat
    # adopts it: its lease is held (renewed, counted as running), not taken for lost
    a = run("a")
    assert (await core.renew([("a", 1)])).lost == [] and core.queues.running("noop") == 1
    # and its end, once told, frees it and is counted
    complete(a)
    await core.adopt("client", ["a"])
    assert "a" not in core.active and core.queues.running("noop") == 0
    assert core.status_counts() == {"COMPLETED": 1}
    # Ended before its notice came, it is counted once: not by a restart that finds it
    # in the intake, but by the claim
    complete(run("b"))
    restarted = make_core()
    assert restarted.status_counts() == {"COMPLETED": 1}
    await restarted.adopt("client", ["b"])
    await restarted.adopt("client", ["b"])  # a notice repeated counts nothing twice
    assert restarted.status_counts() == {"COMPLETED": 2} and len(restarted.active) == 0
    # The notice of its end lost, its lease runs out; the store is found ahead of memory,
    # and the task is let go as it ended, not run again
    c = run("c")
    await restarted.adopt("client", ["c"])
    complete(c)
    clock.now += 6
    await restarted.expire_leases()
    assert "c" not in restarted.active and restarted.status_counts() == {"COMPLETED": 3}
    stored = await restarted.get("c")
    assert stored.status is TaskStatus.COMPLETED and stored.attempt == 0
    # Deleted before its notice came, it is counted, then uncounted: never below zero
    complete(run("e"))
    await restarted.delete("e")
    assert restarted.status_counts() == {"COMPLETED": 3}
    await restarted.adopt("client", ["e"])
    assert restarted.status_counts() == {"COMPLETED": 3}
    # A run its loan turned away is handed back and leased on its first attempt
    run("d")
    await restarted.report([Report("d", 1, "released")])
    (held,) = await lease(restarted)
    assert (held.task_id, held.attempt, held.token) == ("d", 0, 2)
    # A lent run cancelled before anyone adopted it is adopted by the cancel
    run("f")
    cancelled = await restarted.cancel("f")
    assert cancelled.cancel_requested and "f" in restarted.active


async def test_an_idle_executor_is_lent_to_one_client_and_then_polls_again(
        make_core: Any) -> None:
    core = make_core(executor_loan_s=2.0)
    # Given an executor waiting for work
    waiting = asyncio.ensure_future(core.report_and_lease(LeaseRequest(
        "poll", "executor:noop:0", ["noop"], 1, wait_s=5)))
    await asyncio.sleep(0.05)
    # When a client asks for one, it is lent: the executor's wait ends with the loan
    loan = core.lend("client", "noop")
    assert loan is not None and loan.executor_id == "executor:noop:0"
    work = await asyncio.wait_for(waiting, timeout=1)
    assert work.loan == loan and work.leases == []
    # and no other client gets it while it does not wait
    assert core.lend("other", "noop") is None
    # Loans off, or a type with a limit on how many run at once: nothing is lent
    again = asyncio.ensure_future(core.report_and_lease(LeaseRequest(
        "poll-2", "executor:noop:0", ["noop"], 1, wait_s=0.2)))
    await asyncio.sleep(0.05)
    core.registry.register(TaskTypeSpec("noop", lambda p, c: None, max_concurrency=1))
    core.ops.limits.clear()
    assert core.lend("client", "noop") is None
    assert (await again).loan is None
    off = make_core(executor_loan_s=0)
    assert off.lend("client", "noop") is None


async def test_a_model_digest_is_recorded_only_under_the_attempts_lease(
        make_core: Any, clock: Clock) -> None:
    core = make_core()
    (task,) = await create(core, req())
    (held,) = await lease(core)
    # Given a training attempt that holds its lease: its model's digest is recorded, and a
    # task of the same owner reads it back by the registry's name and the model's id
    assert await core.record_model(task.id, held.token, "models", "m:v1", "a" * 64)
    assert await core.model_digest(task.id, "models", "m:v1") == "a" * 64
    assert await core.model_digest(task.id, "models", "m:v2") is None
    # When the lease runs out and the task goes to another attempt
    clock.now += 6
    await core.expire_leases()
    clock.now += 5  # past the retry's backoff
    (again,) = await lease(core)
    # Then the old attempt records nothing more; the current one may
    assert not await core.record_model(task.id, held.token, "models", "m:v2", "b" * 64)
    assert await core.model_digest(task.id, "models", "m:v2") is None
    assert await core.record_model(task.id, again.token, "models", "m:v2", "c" * 64)
    assert await core.model_digest(task.id, "models", "m:v2") == "c" * 64


async def test_dependencies_release_in_order_and_failures_cascade(
        core: TaskManagerCore) -> None:
    a = (await create(core, req()))[0]
    b = (await create(core, req(depends_on=[a.id], max_retries=0)))[0]
    c = (await create(core, req(depends_on=[b.id])))[0]
    held = await lease(core, 5)
    assert [x.task_id for x in held] == [a.id]
    with pytest.raises(InvalidTransitionError):  # b waits for it
        await core.delete(a.id)
    await done(core, held[0])
    with pytest.raises(InvalidTransitionError, match="depending on it"):  # b still names it
        await core.delete(a.id)
    held = await lease(core, 5)
    assert [x.task_id for x in held] == [b.id]
    await done(core, held[0], "failed")
    ended = await core.wait([c.id], timeout_s=5)
    assert (await core.get(b.id)).status is TaskStatus.FAILED
    assert ended[0].status is TaskStatus.FAILED and ended[0].error is not None
    assert ended[0].error.reason == "dependency"


async def test_concurrency_limit_per_type(make_core: Any) -> None:
    core = make_core(task_types={"noop": TaskTypeSettings(max_concurrency=1)})
    await create(core, req(), req())
    assert len(await lease(core, 5)) == 1

async def test_a_dependency_that_ends_while_the_child_is_created_is_found_in_the_store(
        core: TaskManagerCore) -> None:
    # Given a task that runs, and its completion on its way into a commit round
    a = (await create(core, req()))[0]
    held = await lease(core)
    completing = asyncio.ensure_future(done(core, held[0]))
    await asyncio.sleep(0)  # its round is planned and commits on the store's thread
    assert a.id in core.active
    # When a child names it while it is still active in memory, ending before the child's
    # round (the child's read of the store skipped it as active)
    child = (await create(core, req(depends_on=[a.id])))[0]
    await completing
    # Then the child is created and queued behind a completed dependency, not refused
    assert a.id not in core.active and (await core.get(a.id)).status is TaskStatus.COMPLETED
    assert [x.task_id for x in await lease(core)] == [child.id]

    assert await lease(core, 5, "e2") == []


async def test_long_poll_lease_gets_work_as_soon_as_it_is_queued(
        core: TaskManagerCore) -> None:
    waiting = asyncio.ensure_future(core.report_and_lease(LeaseRequest(
        "poll", "e", ["noop"], 1, wait_s=5)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    task = (await create(core, req()))[0]
    work = await asyncio.wait_for(waiting, timeout=1)
    assert [x.task_id for x in work.leases] == [task.id] and work.loan is None


async def test_wait_returns_when_the_task_finishes(core: TaskManagerCore) -> None:
    task = (await create(core, req()))[0]
    waiter = asyncio.ensure_future(core.wait([task.id], timeout_s=5))
    await asyncio.sleep(0.01)
    await done(core, (await lease(core))[0])
    (ended,) = await asyncio.wait_for(waiter, timeout=1)
    assert ended.status is TaskStatus.COMPLETED
    # and a wait that times out leaves nothing behind
    other = (await create(core, req()))[0]
    await core.wait([other.id], timeout_s=0.01)
    assert len(core.sessions) == 0


async def test_a_poll_given_up_takes_nothing_from_the_next(core: TaskManagerCore) -> None:
    task = (await create(core, req()))[0]
    core.sessions.watch("s", [task.id])
    # Given a poll its client stopped reading, still open, and the client's next poll
    given_up = asyncio.ensure_future(core.finished_ids("s", 5))
    await asyncio.sleep(0.01)
    current = asyncio.ensure_future(core.finished_ids("s", 5))
    # Then the first ends with nothing, and the task that finishes goes to the second
    assert await asyncio.wait_for(given_up, timeout=1) == []
    await done(core, (await lease(core))[0])
    assert await asyncio.wait_for(current, timeout=1) == [task.id]


async def test_concurrent_submits_share_one_commit_and_fail_alone(
        core: TaskManagerCore) -> None:
    commits = []
    real_commit = core.store.commit

    def counting_commit(batch: Any) -> list[int]:
        commits.append(len(batch.inserts))
        return real_commit(batch)

    core.pipeline._commit = counting_commit
    calls = [create(core, req()),
             create(core, req(task_type="prediction", parameters={"stock_code": "bad"})),
             create(core, req(), req()),
             create(core, unchecked(parameters={"x": float("inf")}, owner="mallory")),
             create(core, unchecked(tags=["\ud800"]))]
    first, bad, pair, poison, surrogate = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(bad, InvalidParametersError)
    # refused before the group commit: they never fail anyone else's create
    assert isinstance(poison, InvalidParametersError)
    assert isinstance(surrogate, InvalidParametersError)
    # the first call finds the pipeline idle and commits at once (no added latency); the
    # calls that arrive while it commits share the next transaction
    assert commits == [1, 2]
    assert len({first[0].id, pair[0].id, pair[1].id}) == 3  # type: ignore[index]
    # And concurrent creates under one key make one task, whichever round they land in
    keyed = await asyncio.gather(*[create(core, req(idempotency_key="k")) for _ in range(3)])
    assert len({k[0].id for k in keyed}) == 1
    assert core.store.status_counts() == {"PENDING": 4}


async def test_a_failing_group_commit_is_retried_one_by_one(core: TaskManagerCore) -> None:
    real_commit = core.store.commit

    def refuse_mallory(batch: Any) -> list[int]:
        if any(row["owner"] == "mallory" for row in batch.inserts):
            raise ValueError("a row the store refuses")
        return real_commit(batch)

    core.pipeline._commit = refuse_mallory
    good, bad, other = await asyncio.gather(
        create(core, req(owner="alice")), create(core, req(owner="mallory")),
        create(core, req(owner="bob")), return_exceptions=True)
    assert isinstance(bad, Exception) and not isinstance(good, Exception)
    assert not isinstance(other, Exception)
    assert core.store.status_counts() == {"PENDING": 2}


async def test_named_queues_are_scheduled_and_reported_apart(make_core: Any) -> None:
    core = make_core(queues=["default", "research"])
    await create(core, req(queue="research"), req(queue="research", priority=TaskPriority.HIGH),
                 req())
    stats = {q["queue"]: q for q in (await core.stats())["queues"]}
    assert stats["research"]["waiting"] == {"HIGH": 1, "MEDIUM": 1, "LOW": 0}
    assert stats["default"]["waiting"]["MEDIUM"] == 1


async def test_owner_quotas_refuse_with_the_limit_named(make_core: Any) -> None:
    from pydantic import BaseModel

    from raytasks.errors import QuotaExceededError
    from raytasks.settings import QuotaSettings

    class Grid(BaseModel):
        points: int = 1

        def work_units(self) -> int:
            return self.points

    core = make_core(quotas={"*": QuotaSettings(max_pending=2, max_timeout_s=60, max_retries=1,
                                                 max_work_units=1000, max_running=1)})
    core.registry.register(TaskTypeSpec("grid", lambda p, c: None, Grid, timeout_s=600))
    # Ceilings: a request over one is refused, naming the field and the limit...
    with pytest.raises(InvalidParametersError, match="max_timeout_s=60"):
        await create(core, req(owner="alice", timeout_s=120))
    with pytest.raises(InvalidParametersError, match="max_retries=1"):
        await create(core, req(owner="alice", max_retries=5))
    with pytest.raises(InvalidParametersError, match="max_work_units=1,000") as info:
        await create(core, req(owner="alice", task_type="grid", parameters={"points": 10**6}))
    assert info.value.errors[0]["field"] == "parameters"
    # ...and a type's default over one is capped to it
    capped = (await create(core, req(owner="alice", task_type="grid")))[0]
    assert capped.timeout_s == 60 and capped.max_retries == 1
    # Pending: the third waiting task is refused; trusted clients (no owner) are not limited
    await create(core, req(owner="alice"))
    with pytest.raises(QuotaExceededError, match="max_pending=2"):
        await create(core, req(owner="alice"))
    await create(core, req(owner="bob"), req(), req(), req())
    # Running: alice's second task waits while bob's starts
    started = [x.task_id for x in await lease(core, 10, types=("noop", "grid"))]
    owners = [(await core.get(t)).owner for t in started]
    assert owners.count("alice") == 1 and owners.count("bob") == 1 and owners.count(None) == 3


async def test_what_attempts_used_is_stored_and_held_against_the_days_cpu_quota(
        make_core: Any, clock: Clock) -> None:
    from raytasks.settings import QuotaSettings

    core = make_core(quotas={"*": QuotaSettings(max_cpu_s_per_day=10)})
    bob = await create(core, *[req(owner="bob") for _ in range(3)])
    alice = await create(core, req(owner="alice"))
    (first,) = await lease(core, 1)
    assert first.task_id == bob[0].id
    # Given bob's first attempt reports 12 CPU seconds and 300 MB at its peak
    await core.report([Report(first.task_id, first.token, "completed", result="1",
                              cpu_s=12.0, peak_rss_bytes=300_000_000)])
    # Then the task shows what it used, and the attempt is kept
    done = await core.get(first.task_id)
    assert (done.cpu_s, done.peak_rss_bytes) == (12.0, 300_000_000)
    with core.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT attempt, outcome, cpu_s FROM rt_attempts")).all()
    assert [tuple(r) for r in rows] == [(0, "completed", 12.0)]
    # and bob, over his 10 CPU seconds of the day, starts nothing more today; alice does
    started = [x.task_id for x in await lease(core, 5)]
    assert started == [alice[0].id]
    # and a restarted manager still knows what bob used today
    again = make_core(quotas={"*": QuotaSettings(max_cpu_s_per_day=10)})
    assert [x.task_id for x in await lease(again, 5)] == []
    # The next UTC day, his tasks start again
    clock.now += 86400
    assert sorted(x.task_id for x in await lease(again, 5)) == sorted(t.id for t in bob[1:])


async def test_one_owners_backlog_does_not_shut_out_another(core: TaskManagerCore,
                                                           clock: Clock) -> None:
    alice = await create(core, *[req(owner="alice") for _ in range(20)])
    clock.now += 1
    bob = (await create(core, req(owner="bob")))[0]
    started = []
    for _ in range(3):
        clock.now += 0.1
        (held,) = await lease(core)
        started.append(held.task_id)
        await done(core, held)
    assert started[0] == alice[0].id and bob.id in started[1:3]


async def test_dependencies_stay_within_an_owner(core: TaskManagerCore) -> None:
    alices = (await create(core, req(owner="alice")))[0]
    with pytest.raises(InvalidParametersError) as other:
        await create(core, req(owner="bob", depends_on=[alices.id]))
    with pytest.raises(InvalidParametersError) as unknown:
        await create(core, req(owner="bob", depends_on=["f" * 32]))
    # the same answer as for an id that does not exist: no existence oracle
    assert other.value.errors[0]["reason"].replace(alices.id, "?") == \
        unknown.value.errors[0]["reason"].replace("f" * 32, "?")
    assert (await create(core, req(owner="alice", depends_on=[alices.id])))[0].depends_on \
        == [alices.id]


async def test_listing_pages_by_keyset_and_totals_from_counters(core: TaskManagerCore) -> None:
    made = await create(core, *[req(owner="alice") for _ in range(7)], req(owner="bob"))
    await done(core, (await lease(core))[0])
    pages, after = [], None
    while True:
        page = await core.query(TaskQuery(owner="alice", limit=3, after=after))
        pages.append([t.id for t in page.items])
        assert page.total == 7  # from the counters: no count query
        after = page.next_after
        if after is None:
            break
    # one call: one creation time, so the id breaks the tie (newest first means id descending)
    newest_first = sorted((t.id for t in made[:7]), reverse=True)
    assert [i for p in pages for i in p] == newest_first and [len(p) for p in pages] == [3, 3, 1]
    assert core.status_counts() == {"PENDING": 7, "COMPLETED": 1}
    assert core.status_counts("alice") == {"PENDING": 6, "COMPLETED": 1}
    done_page = await core.query(TaskQuery(status=[TaskStatus.COMPLETED]))
    assert done_page.total == 1 and done_page.items[0].id == made[0].id
    with pytest.raises(InvalidParametersError, match="after"):
        await core.query(TaskQuery(after="not-a-cursor"))


@pytest.mark.parametrize("archived", [True, False])
async def test_retention_prunes_old_finished_tasks_and_archives_them(
        make_core: Any, clock: Clock, tmp_path: Path, archived: bool) -> None:
    """Whole rows are read only to archive them; without an archive, the columns the
    delete needs: either way the same tasks go, and the counters follow."""
    import pyarrow.parquet as pq

    core = make_core(task_retention_s=3600,
                     archive_dir=tmp_path / "archive" if archived else None)
    old = await create(core, req(owner="alice"), req(owner="alice"))
    for held in await lease(core, 2):
        await done(core, held)
    parent = (await create(core, req()))[0]
    await done(core, (await lease(core))[0])
    child = (await create(core, req(depends_on=[parent.id]), enqueue=False))[0]
    clock.now += 2 * 3600
    young = (await create(core, req()))[0]
    await done(core, (await lease(core))[0])
    assert all(core.store.attempts(t.id) for t in old)
    # When retention runs
    pruned = await core.prune()
    # Then the old finished tasks are gone (archived first), the young one stays, and a
    # finished parent that a waiting child depends on is kept
    assert pruned["tasks"] == 2
    for task in old:
        with pytest.raises(TaskNotFoundError):
            await core.get(task.id)
        assert core.store.attempts(task.id) == []  # their attempts too: the store stays bounded
    assert (await core.get(young.id)).status is TaskStatus.COMPLETED
    assert (await core.get(child.id)).status is TaskStatus.PENDING
    rows = [r for f in (tmp_path / "archive").glob("*.parquet")
            for r in pq.read_table(f).to_pylist()]
    assert sorted(r["id"] for r in rows) == (sorted(t.id for t in old) if archived else [])
    assert all(r["parameters"] and r["finished_at"] for r in rows)  # whole rows
    assert core.status_counts("alice") == {}  # the counters follow


async def test_explain_names_each_cause_that_holds_a_task(make_core: Any, clock: Clock) -> None:
    from raytasks.settings import QuotaSettings

    core = make_core(quotas={"*": QuotaSettings(), "alice": QuotaSettings(max_running=1)})
    core.registry.register(TaskTypeSpec("single", lambda p, c: None, max_concurrency=1))
    core.ops.limits.clear()

    async def causes(task_id: str) -> list[str]:
        return (await core.explain(task_id)).causes

    # A task created but not queued, and one that waits for another
    (created,) = await create(core, req(), enqueue=False)
    assert "not_queued" in await causes(created.id)
    (parent,) = await create(core, req(task_type="single"))
    (child,) = await create(core, req(depends_on=[parent.id]))
    assert "dependencies" in await causes(child.id)
    assert (await core.explain(child.id)).dependencies == [parent.id]
    # Three waiting tasks of one type: the last is third, with two MEDIUM ahead, no executor
    await create(core, req(), req())
    (third,) = await create(core, req())
    third_says = await core.explain(third.id)
    assert third_says.place == 3 and third_says.ahead == {"MEDIUM": 2}
    assert {"behind", "no_executor"} <= set(third_says.causes)
    assert third_says.predicted_start is not None and third_says.estimate_s is not None
    # Leased, the first runs: explained as running, with a predicted finish
    (held,) = await lease(core)
    running = await core.explain(held.task_id)
    assert running.causes == ["running"] and running.predicted_finish is not None
    assert "executors_busy" in await causes(third.id)
    # A failed attempt in its backoff
    await done(core, held, "failed")
    assert "backoff" in await causes(held.task_id)
    # An owner at its running quota, and a type at its concurrency limit
    mine, queued = await create(core, req(owner="alice"), req(owner="alice"))
    single_a, single_b = await create(core, req(task_type="single"), req(task_type="single"))
    clock.now += 10
    await lease(core, 10, types=("noop", "single"))
    assert "quota" in await causes(queued.id) or "quota" in await causes(mine.id)
    waiting_single = single_b if (await core.get(single_a.id)).status.value == "RUNNING" \
        else single_a
    assert "type_limit" in await causes(waiting_single.id)
    # A finished task says so
    cancelled = (await create(core, req()))[0]
    await core.cancel(cancelled.id)
    assert await causes(cancelled.id) == ["finished"]
