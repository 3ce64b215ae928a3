"""Typed remote calls on the manager: :class:`ManagerCalls` mirrors
:class:`raytasks.protocol.ManagerApi` method for method, each answering a :class:`Call`
that a coroutine awaits or a script waits for (``result``), with raytasks' own error
re-raised in either case."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

import ray
from ray.actor import ActorHandle

from ..errors import RaytasksError
from ..messages import Ack, IntakeGrant, Lease, Loan, NewTask, Report, WatchAnswer, Wire
from ..models import (
    AttemptInfo,
    QueueStats,
    Task,
    TaskExplanation,
    TaskPriority,
    TaskQuery,
    TaskStatus,
    TaskTypeInfo,
    TaskUpdateRequest,
)
from ..schedules.models import Schedule, ScheduleCreateRequest
from ..store.base import TaskRows

T = TypeVar("T")


class Call(Generic[T]):
    """One remote call under way: ``await call``, or ``call.result(timeout_s)``."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self, timeout_s: float | None = None) -> T:
        try:
            value: T = ray.get(self.ref, timeout=timeout_s)
        except ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None
        return value

    def done(self, timeout_s: float = 0.0) -> bool:
        """Whether the answer is here (waiting up to ``timeout_s`` for it)."""
        return bool(ray.wait([self.ref], timeout=timeout_s)[0])

    def __await__(self) -> Generator[Any, None, T]:
        return self._answer().__await__()

    async def _answer(self) -> T:
        try:
            value: T = await self.ref
        except ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None
        return value


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps an actor's exception; give the caller raytasks' own error back."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RaytasksError):
        return cause
    return exc


class ManagerCalls:
    """The manager actor's methods, called through Ray (see ``ManagerApi`` for each)."""

    def __init__(self, handle: ActorHandle) -> None:
        self._h: Any = handle

    # creating and queueing
    def submit(self, calls: list[list[NewTask]],
               enqueue: bool = True) -> Call[list[list[Ack | Task] | RaytasksError]]:
        return Call(self._h.submit.remote(calls, enqueue))

    def enqueue(self, task_id: str, priority: TaskPriority | None = None) -> Call[Task]:
        return Call(self._h.enqueue.remote(task_id, priority))

    def grant(self, client: str) -> Call[IntakeGrant | None]:
        return Call(self._h.grant.remote(client))

    def adopt(self, client: str, task_ids: list[str],
              queues: dict[str, int] | None = None) -> Call[None]:
        return Call(self._h.adopt.remote(client, task_ids, queues))

    def lend(self, client: str, task_type: str) -> Call[Loan | None]:
        return Call(self._h.lend.remote(client, task_type))

    # waiting
    def watch(self, session_id: str, task_ids: list[str]) -> Call[WatchAnswer]:
        return Call(self._h.watch.remote(session_id, task_ids))

    def finished_ids(self, session_id: str, timeout_s: float = 10.0) -> Call[list[str] | None]:
        return Call(self._h.finished_ids.remote(session_id, timeout_s))

    # reading and changing tasks
    def get(self, task_id: str) -> Call[Task]:
        return Call(self._h.get.remote(task_id))

    def get_many(self, task_ids: list[str]) -> Call[list[Task]]:
        return Call(self._h.get_many.remote(task_ids))

    def query(self, query: TaskQuery) -> Call[TaskRows]:
        return Call(self._h.query.remote(query))

    def update(self, task_id: str, request: TaskUpdateRequest) -> Call[Task]:
        return Call(self._h.update.remote(task_id, request))

    def delete(self, task_id: str) -> Call[None]:
        return Call(self._h.delete.remote(task_id))

    def cancel(self, task_id: str) -> Call[Task]:
        return Call(self._h.cancel.remote(task_id))

    def retry(self, task_id: str) -> Call[Task]:
        return Call(self._h.retry.remote(task_id))

    def stats(self) -> Call[dict[str, Any]]:
        return Call(self._h.stats.remote())

    def explain(self, task_id: str) -> Call[TaskExplanation]:
        return Call(self._h.explain.remote(task_id))

    def attempts(self, task_id: str) -> Call[list[AttemptInfo]]:
        return Call(self._h.attempts.remote(task_id))

    def queue_stats(self) -> Call[list[QueueStats]]:
        return Call(self._h.queue_stats.remote())

    def types(self) -> Call[list[TaskTypeInfo]]:
        return Call(self._h.types.remote())

    def register_type(self, blob: bytes) -> Call[TaskTypeInfo]:
        return Call(self._h.register_type.remote(blob))

    def logs(self, task_id: str, attempt: int | None = None, after_id: int = 0,
             limit: int = 1000) -> Call[list[dict[str, Any]]]:
        return Call(self._h.logs.remote(task_id, attempt, after_id, limit))

    def log_page(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                 limit: int = 1000) -> Call[tuple[TaskStatus, list[dict[str, Any]]]]:
        return Call(self._h.log_page.remote(task_id, attempt, after_id, limit))

    # schedules
    def create_schedule(self, request: ScheduleCreateRequest) -> Call[Schedule]:
        return Call(self._h.create_schedule.remote(request))

    def get_schedule(self, schedule_id: str) -> Call[Schedule]:
        return Call(self._h.get_schedule.remote(schedule_id))

    def list_schedules(self, owner: str | None = None) -> Call[list[Schedule]]:
        return Call(self._h.list_schedules.remote(owner))

    def pause_schedule(self, schedule_id: str) -> Call[Schedule]:
        return Call(self._h.pause_schedule.remote(schedule_id))

    def resume_schedule(self, schedule_id: str) -> Call[Schedule]:
        return Call(self._h.resume_schedule.remote(schedule_id))

    def delete_schedule(self, schedule_id: str) -> Call[None]:
        return Call(self._h.delete_schedule.remote(schedule_id))

    def next_runs(self, schedule_id: str, count: int = 5) -> Call[list[dict[str, object]]]:
        return Call(self._h.next_runs.remote(schedule_id, count))

    # executors
    def report(self, reports: list[Report]) -> Call[Any]:
        return Call(self._h.report.remote(reports))

    def record_model(self, task_id: str, token: int, registry: str, model_id: str,
                     sha256: str) -> Call[bool]:
        return Call(self._h.record_model.remote(task_id, token, registry, model_id, sha256))

    def model_digest(self, task_id: str, registry: str, model_id: str) -> Call[str | None]:
        return Call(self._h.model_digest.remote(task_id, registry, model_id))


class ExecutorCalls:
    """A lent executor's one call a client makes: run a lone task under its loan."""

    def __init__(self, handle: ActorHandle) -> None:
        self._h: Any = handle

    def run_lent(self, loan: Loan, lease: Lease) -> Call[tuple[bool, Wire | None]]:
        """``PooledExecutor.run_lent``: the lease and the report travel as plain lists
        (MessagePack, no pickler per call)."""
        return Call(self._h.run_lent.remote(loan.loan_id, lease.wire()))
