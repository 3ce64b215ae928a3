"""TaskManagerCore without Ray, on both store backends, with a clock the test controls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
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
from raytasks.models import (
    TaskCreateRequest,
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
    def make(**overrides: Any) -> TaskManagerCore:
        values: dict[str, Any] = {"data_dir": tmp_path, "store_url": store_url,
                                  "retry_backoff_base_s": 1.0, "retry_jitter": 0.0,
                                  "lease_ttl_s": 5.0}
        values.update(overrides)
        core = TaskManagerCore(Settings(**values), clock=clock)
        core.registry.register(TaskTypeSpec("noop", lambda p, c: None))
        core.reconcile()
        return core
    return make


@pytest.fixture
def core(make_core: Any) -> TaskManagerCore:
    return make_core()


def _req(priority: TaskPriority = TaskPriority.MEDIUM, **kw: Any) -> TaskCreateRequest:
    return TaskCreateRequest(name="n", task_type=kw.pop("task_type", "noop"),
                             priority=priority, **kw)


def _done(core: TaskManagerCore, lease: Any, outcome: str = "completed", **kw: Any) -> Any:
    rep = {"task_id": lease.task_id, "token": lease.token, "outcome": outcome, **kw}
    if outcome == "completed":
        rep.setdefault("result", '{"ok": true}')
    else:
        rep.setdefault("error", {"type": "E", "message": "boom", "reason": "error"})
    return core.report([rep])


def test_invalid_input_names_the_problem(core: TaskManagerCore) -> None:
    with pytest.raises(UnknownTaskTypeError, match="unknown task type 'nope'"):
        core.create([_req(task_type="nope")])
    with pytest.raises(InvalidParametersError) as info:
        core.create([_req(task_type="prediction",
                          parameters={"stock_code": "000001", "days": 500})])
    fields = {e["field"] for e in info.value.errors}
    assert fields == {"parameters.stock_code", "parameters.days"}
    assert "parameters.stock_code" in str(info.value)
    with pytest.raises(PayloadTooLargeError, match="over the limit"):
        core.create([_req(parameters={"blob": "x" * 2_000_000})])
    with pytest.raises(InvalidParametersError, match="depends_on"):
        core.create([_req(depends_on=["no-such-task"])])
    with pytest.raises(ValidationError, match="priority"):
        TaskCreateRequest(name="n", task_type="noop", priority=7)  # type: ignore[arg-type]
    with pytest.raises(TaskNotFoundError):
        core.get("no-such-task")
    assert core.store.status_counts() == {}  # nothing was stored by the refused requests


def test_batch_errors_point_at_the_request(core: TaskManagerCore) -> None:
    with pytest.raises(InvalidParametersError, match=r"requests\[1\]\.parameters\.stock_code"):
        core.create([_req(task_type="prediction", parameters={"stock_code": "000001.SZ"}),
                     _req(task_type="prediction", parameters={"stock_code": "bad"})])
    assert core.store.status_counts() == {}


def test_idempotent_create(core: TaskManagerCore) -> None:
    a = core.create([_req(idempotency_key="k")])[0]
    b = core.create([_req(idempotency_key="k")])[0]
    c = core.create([_req()], ids=[a.id])[0]  # a retried call carries the same id
    assert a.id == b.id == c.id and core.store.status_counts() == {"PENDING": 1}


def test_priority_order_and_fencing(core: TaskManagerCore, clock: Clock) -> None:
    low = core.create([_req(TaskPriority.LOW)], enqueue=True)[0]
    high = core.create([_req(TaskPriority.HIGH)], enqueue=True)[0]
    first = core.lease_now("e1", ["noop"], 1)[0]
    assert first.task_id == high.id
    second = core.lease_now("e1", ["noop"], 1)[0]
    assert second.task_id == low.id
    stale = second.model_copy(update={"token": second.token - 1})
    assert _done(core, stale) == {"accepted": [], "rejected": [low.id]}
    assert _done(core, second) == {"accepted": [low.id], "rejected": []}
    assert _done(core, second) == {"accepted": [], "rejected": [low.id]}  # never twice
    assert core.get(low.id).status is TaskStatus.COMPLETED
    assert core.get(low.id).result == {"ok": True}


def test_retry_waits_for_backoff_then_fails_when_spent(core: TaskManagerCore,
                                                       clock: Clock) -> None:
    task = core.create([_req(max_retries=1)], enqueue=True)[0]
    lease = core.lease_now("e", ["noop"])[0]
    _done(core, lease, "failed")
    assert core.get(task.id).status is TaskStatus.PENDING and core.get(task.id).attempt == 1
    assert core.lease_now("e", ["noop"]) == []  # backoff: 1 s for the first retry
    clock.now += 1.01
    lease = core.lease_now("e", ["noop"])[0]
    assert lease.attempt == 1
    _done(core, lease, "failed")
    done = core.get(task.id)
    assert done.status is TaskStatus.FAILED and done.error is not None
    assert done.error.message == "boom" and done.finished_at is not None


def test_expired_lease_is_retried_then_failed_as_lost(core: TaskManagerCore,
                                                      clock: Clock) -> None:
    task = core.create([_req(max_retries=1)], enqueue=True)[0]
    core.lease_now("e", ["noop"])
    clock.now += 3
    assert core.renew([(task.id, 1)]) == {"lost": [], "cancel": []}
    clock.now += 4  # renewed at +3 to +8: not yet expired
    assert core.expire_leases() == []
    clock.now += 2
    assert core.expire_leases() == [task.id]
    assert core.get(task.id).status is TaskStatus.PENDING
    clock.now += 2
    core.lease_now("e", ["noop"])
    clock.now += 6
    core.expire_leases()
    done = core.get(task.id)
    assert done.status is TaskStatus.FAILED and done.error is not None
    assert done.error.reason == "lost"


def test_restart_reconciles_from_the_store(make_core: Any, clock: Clock) -> None:
    core = make_core()
    running = core.create([_req()], enqueue=True)[0]
    lease = core.lease_now("e", ["noop"])[0]
    waiting = core.create([_req(TaskPriority.LOW)], enqueue=True)[0]
    created_only = core.create([_req(TaskPriority.HIGH)])[0]
    # When the manager is replaced by a fresh one on the same store
    again = make_core()
    # Then queued work is queued again, unqueued work stays put, and the running
    # task's executor may still report under its token
    assert [x.task_id for x in again.lease_now("e2", ["noop"], 5)] == [waiting.id]
    assert _done(again, lease)["accepted"] == [running.id]
    assert again.get(created_only.id).status is TaskStatus.PENDING


def test_cancel_update_delete_retry_rules(core: TaskManagerCore) -> None:
    pending = core.create([_req()], enqueue=True)[0]
    running = core.create([_req()], enqueue=True)[0]
    lease = core.lease_now("e", ["noop"])[0]
    assert lease.task_id == pending.id
    assert core.cancel(pending.id).status is TaskStatus.RUNNING  # it was running: asked
    assert core.renew([(pending.id, lease.token)])["cancel"] == [pending.id]
    _done(core, lease, "cancelled")
    assert core.get(pending.id).status is TaskStatus.CANCELLED
    assert core.cancel(running.id).status is TaskStatus.CANCELLED  # pending: at once
    with pytest.raises(InvalidTransitionError):
        core.cancel(running.id)
    with pytest.raises(InvalidTransitionError, match="cannot become deleted"):
        core.delete(core.create([_req()], enqueue=True)[0].id)
    retried = core.retry(running.id)
    assert retried.status is TaskStatus.PENDING and retried.attempt == 1
    core.delete(pending.id)
    with pytest.raises(TaskNotFoundError):
        core.get(pending.id)
    updated = core.update(retried.id, TaskUpdateRequest(name="renamed", tags=["a"],
                                                        priority=TaskPriority.HIGH))
    assert (updated.name, updated.tags, updated.priority) == ("renamed", ["a"],
                                                              TaskPriority.HIGH)
    page, total = core.query(TaskQuery(tags=["a"]))
    assert total == 1 and page[0].id == retried.id


def test_full_queue_refuses_whole_batches(make_core: Any) -> None:
    core = make_core(max_queue_size=2)
    core.create([_req()], enqueue=True)
    with pytest.raises(QueueFullError, match="1 of 2"):
        core.create([_req(), _req()], enqueue=True)
    assert core.store.status_counts() == {"PENDING": 1}
    core.create([_req()])  # created but not queued: admitted
    assert core.store.status_counts() == {"PENDING": 2}


def test_dependencies_release_in_order_and_failures_cascade(core: TaskManagerCore) -> None:
    a = core.create([_req()], enqueue=True)[0]
    b = core.create([_req(depends_on=[a.id], max_retries=0)], enqueue=True)[0]
    c = core.create([_req(depends_on=[b.id])], enqueue=True)[0]
    lease = core.lease_now("e", ["noop"], 5)
    assert [x.task_id for x in lease] == [a.id]
    _done(core, lease[0])
    lease = core.lease_now("e", ["noop"], 5)
    assert [x.task_id for x in lease] == [b.id]
    _done(core, lease[0], "failed")
    ended = core.get(c.id)
    assert core.get(b.id).status is TaskStatus.FAILED
    assert ended.status is TaskStatus.FAILED and ended.error is not None
    assert ended.error.reason == "dependency"


def test_concurrency_limit_per_type(make_core: Any) -> None:
    core = make_core(task_types={"noop": TaskTypeSettings(max_concurrency=1)})
    core.create([_req(), _req()], enqueue=True)
    assert len(core.lease_now("e", ["noop"], 5)) == 1
    assert core.lease_now("e2", ["noop"], 5) == []


async def test_long_poll_lease_gets_work_as_soon_as_it_is_queued(core: TaskManagerCore) -> None:
    waiting = asyncio.ensure_future(core.lease("e", ["noop"], 1, wait_s=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    task = (await core.create_and_enqueue([_req()]))[0]
    leases = await asyncio.wait_for(waiting, timeout=1)
    assert [x.task_id for x in leases] == [task.id]


async def test_wait_returns_when_the_task_finishes(core: TaskManagerCore) -> None:
    task = core.create([_req()], enqueue=True)[0]
    waiter = asyncio.ensure_future(core.wait([task.id], timeout_s=5))
    await asyncio.sleep(0.01)
    _done(core, core.lease_now("e", ["noop"])[0])
    (done,) = await asyncio.wait_for(waiter, timeout=1)
    assert done.status is TaskStatus.COMPLETED


async def test_concurrent_submits_share_one_commit_and_fail_alone(core: TaskManagerCore) -> None:
    commits = []
    real_commit = core.store.commit

    def counting_commit(batch: Any) -> list[int]:
        commits.append(len(batch.inserts))
        return real_commit(batch)

    core.store.commit = counting_commit  # type: ignore[method-assign]
    calls = [core.create_and_enqueue([_req()]),
             core.create_and_enqueue([_req(task_type="prediction",
                                           parameters={"stock_code": "bad"})]),
             core.create_and_enqueue([_req(idempotency_key="k"), _req(idempotency_key="k")]),
             core.create_and_enqueue([_req(idempotency_key="k")])]
    first, bad, pair, repeat = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(bad, InvalidParametersError)
    assert commits == [2]  # one transaction: the first task and the one keyed "k"
    assert pair[0].id == pair[1].id == repeat[0].id != first[0].id  # type: ignore[index]
    assert core.store.status_counts() == {"PENDING": 2}


def test_named_queues_are_scheduled_and_reported_apart(core: TaskManagerCore) -> None:
    core.create([_req(queue="research"), _req(queue="research", priority=TaskPriority.HIGH),
                 _req()], enqueue=True)
    stats = {q["queue"]: q for q in core.stats()["queues"]}
    assert stats["research"]["waiting"] == {"HIGH": 1, "MEDIUM": 1, "LOW": 0}
    assert stats["default"]["waiting"]["MEDIUM"] == 1
