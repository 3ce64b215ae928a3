"""Public facades over the system actors. Each async method has a blocking ``*_sync`` twin."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from pydantic import BaseModel

from . import runtime as rt
from .client import Watcher, compact, new_task
from .errors import TaskFailedError, TaskNotFoundError, WaitTimeoutError
from .messages import Ack, NewTask
from .models import (
    AttemptInfo,
    QueueStats,
    Task,
    TaskCreateRequest,
    TaskExplanation,
    TaskNotification,
    TaskPriority,
    TaskProgress,
    TaskQuery,
    TaskStatus,
    TaskSummary,
    TaskTypeInfo,
    TaskUpdateRequest,
)
from .registry import Handler, TaskTypeSpec
from .reproduce import Verdict, rerun_request, verify
from .runtime.calls import Call, ManagerCalls
from .schedules import Schedule, ScheduleCreateRequest

T = TypeVar("T")


class TaskPage(BaseModel):
    """A page of tasks. ``next_after`` fetches the next page (``TaskQuery(after=...)``);
    ``total`` is None when more than 1,000 tasks match filters the counters cannot tell."""

    items: list[TaskSummary]
    total: int | None
    offset: int
    limit: int
    next_after: str | None = None


class _Facade:
    """Calls on the system actors: the manager's typed (``self._manager``), the others by
    their role (``self._actor``)."""

    role = rt.MANAGER

    def __init__(self, runtime: rt.Runtime | None = None) -> None:
        self._rt = runtime or rt.current()

    @property
    def _manager(self) -> ManagerCalls:
        return self._rt.manager

    @property
    def _actor(self) -> Any:
        return self._rt.handle(self.role)

    async def _await(self, ref: Any) -> Any:
        return await Call[Any](ref)

    def _get(self, ref: Any, timeout_s: float | None = None) -> Any:
        return Call[Any](ref).result(timeout_s)


class TaskManager(_Facade):
    """Create, query, change and wait for tasks.

    Submits and creates take the fast path: parameters are validated here when the
    type's model is known, calls made while another is in flight go together in the
    next one (one actor call, one commit), and every wait of this client rides one
    stream of finished tasks.
    """

    async def create_task(self, request: TaskCreateRequest) -> Task:
        """Store a task (PENDING, not yet queued); ``TaskQueueManager.submit_task`` queues it."""
        return (await self._create([request], enqueue=False))[0]

    def create_task_sync(self, request: TaskCreateRequest) -> Task:
        return self._create_sync([request], enqueue=False)[0]

    async def submit(self, request: TaskCreateRequest) -> Task:
        """Create and queue in one call, at the request's priority."""
        return (await self._create([request], enqueue=True))[0]

    def submit_sync(self, request: TaskCreateRequest) -> Task:
        return self._create_sync([request], enqueue=True)[0]

    async def submit_many(self, requests: list[TaskCreateRequest]) -> list[Task]:
        """Create and queue many tasks in one commit; all are refused if one is invalid."""
        return await self._create(requests, enqueue=True)

    def submit_many_sync(self, requests: list[TaskCreateRequest]) -> list[Task]:
        return self._create_sync(requests, enqueue=True)

    async def _create(self, requests: list[TaskCreateRequest], enqueue: bool) -> list[Task]:
        session = self._rt.session
        sent = compact(requests, session.types, self._rt.settings.max_parameters_bytes)
        return _tasks(sent, await session.submit_async(sent, enqueue))

    def _create_sync(self, requests: list[TaskCreateRequest], enqueue: bool) -> list[Task]:
        session = self._rt.session
        sent = compact(requests, session.types, self._rt.settings.max_parameters_bytes)
        return _tasks(sent, session.submit(sent, enqueue))

    async def get_task(self, task_id: str) -> Task:
        return await self._manager.get(task_id)

    def get_task_sync(self, task_id: str) -> Task:
        return self._manager.get(task_id).result()

    async def update_task(self, task_id: str, request: TaskUpdateRequest) -> Task:
        return await self._manager.update(task_id, request)

    def update_task_sync(self, task_id: str, request: TaskUpdateRequest) -> Task:
        return self._manager.update(task_id, request).result()

    async def delete_task(self, task_id: str) -> None:
        await self._manager.delete(task_id)

    def delete_task_sync(self, task_id: str) -> None:
        self._manager.delete(task_id).result()

    async def list_tasks(self, query: TaskQuery | None = None) -> TaskPage:
        query = query or TaskQuery()
        items, total, after = await self._manager.query(query)
        return TaskPage(items=items, total=total, offset=query.offset, limit=query.limit,
                        next_after=after)

    def list_tasks_sync(self, query: TaskQuery | None = None) -> TaskPage:
        query = query or TaskQuery()
        items, total, after = self._manager.query(query).result()
        return TaskPage(items=items, total=total, offset=query.offset, limit=query.limit,
                        next_after=after)

    async def cancel_task(self, task_id: str) -> Task:
        """Cancel: a PENDING task at once, a RUNNING one cooperatively, then by force."""
        return await self._manager.cancel(task_id)

    def cancel_task_sync(self, task_id: str) -> Task:
        return self._manager.cancel(task_id).result()

    async def retry_task(self, task_id: str) -> Task:
        return await self._manager.retry(task_id)

    def retry_task_sync(self, task_id: str) -> Task:
        return self._manager.retry(task_id).result()

    async def wait(self, task_id: str, timeout_s: float | None = None) -> Task:
        """The task once finished (whatever its status).

        Raises:
            WaitTimeoutError: still unfinished after ``timeout_s``.
        """
        return (await self.wait_all([task_id], timeout_s))[0]

    def wait_sync(self, task_id: str, timeout_s: float | None = None) -> Task:
        return self.wait_all_sync([task_id], timeout_s)[0]

    async def wait_all(self, task_ids: list[str], timeout_s: float | None = None) -> list[Task]:
        """Every task once finished, in the order asked (one stream serves all waits).

        Raises:
            WaitTimeoutError: some still unfinished after ``timeout_s`` (their ids named).
            TaskNotFoundError: an id that does not exist.
        """
        watcher = self._rt.session.watcher
        futures = await asyncio.to_thread(watcher.futures, task_ids)
        if futures:
            await asyncio.wait([asyncio.wrap_future(f) for f in futures], timeout=timeout_s)
        return _collected(watcher, task_ids, futures, timeout_s)

    def wait_all_sync(self, task_ids: list[str], timeout_s: float | None = None) -> list[Task]:
        watcher = self._rt.session.watcher
        futures = watcher.futures(task_ids)
        concurrent.futures.wait(futures, timeout=timeout_s)
        return _collected(watcher, task_ids, futures, timeout_s)

    def as_completed_sync(self, task_ids: list[str],
                          timeout_s: float | None = None) -> Iterator[Task]:
        """Each task as it finishes, first finished first.

        Raises:
            WaitTimeoutError: tasks still unfinished after ``timeout_s``.
        """
        futures = self._rt.session.watcher.futures(task_ids)
        try:
            for future in concurrent.futures.as_completed(futures, timeout=timeout_s):
                yield future.result()
        except TimeoutError:
            raise WaitTimeoutError([t for t, f in zip(task_ids, futures, strict=True)
                                    if not f.done()], timeout_s or 0.0) from None

    async def as_completed(self, task_ids: list[str],
                           timeout_s: float | None = None) -> AsyncIterator[Task]:
        futures = await asyncio.to_thread(self._rt.session.watcher.futures, task_ids)
        try:
            for next_done in asyncio.as_completed([asyncio.wrap_future(f) for f in futures],
                                                  timeout=timeout_s):
                yield await next_done
        except TimeoutError:
            raise WaitTimeoutError([t for t, f in zip(task_ids, futures, strict=True)
                                    if not f.done()], timeout_s or 0.0) from None

    async def explain(self, task_id: str) -> TaskExplanation:
        """Why the task waits (or runs), and when it should start and finish."""
        return await self._manager.explain(task_id)

    def explain_sync(self, task_id: str) -> TaskExplanation:
        return self._manager.explain(task_id).result()

    async def attempts(self, task_id: str) -> list[AttemptInfo]:
        """How each attempt of the task that reported ended (preempted, timed out...)."""
        return await self._manager.attempts(task_id)

    def attempts_sync(self, task_id: str) -> list[AttemptInfo]:
        return self._manager.attempts(task_id).result()

    async def stats(self) -> dict[str, Any]:
        return await self._manager.stats()

    def stats_sync(self) -> dict[str, Any]:
        return self._manager.stats().result()

    async def task_types(self) -> list[TaskTypeInfo]:
        return await self._manager.types()

    def task_types_sync(self) -> list[TaskTypeInfo]:
        return self._manager.types().result()

    async def rerun(self, task_id: str, timeout_s: float | None = None) -> Verdict:
        """Run a completed task again on the same inputs, wait for it, and compare the
        results field by field within the type's tolerance (:mod:`raytasks.reproduce`)."""
        original = await self.get_task(task_id)
        again = await self.submit(rerun_request(original))
        done = await self.wait(again.id, timeout_s)
        types = {t.name: t for t in await self.task_types()}
        return verify(original, done, types.get(original.task_type))

    def rerun_sync(self, task_id: str, timeout_s: float | None = None) -> Verdict:
        original = self.get_task_sync(task_id)
        again = self.submit_sync(rerun_request(original))
        done = self.wait_sync(again.id, timeout_s)
        types = {t.name: t for t in self.task_types_sync()}
        return verify(original, done, types.get(original.task_type))

    # -------------------------------------------------------------- task logs

    async def logs(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                   limit: int = 1000) -> list[dict[str, Any]]:
        """What a task's handler printed or logged, and raytasks' lines about each attempt:
        ``{"id", "attempt", "at", "stream", "line"}`` rows, oldest first, after ``after_id``.
        """
        return await self._manager.logs(task_id, attempt, after_id, limit)

    async def log_page(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                       limit: int = 1000) -> tuple[TaskStatus, list[dict[str, Any]]]:
        """The task's status and its next log lines in one call (what a follower polls)."""
        return await self._manager.log_page(task_id, attempt, after_id, limit)

    def logs_sync(self, task_id: str, attempt: int | None = None, after_id: int = 0,
                  limit: int = 1000) -> list[dict[str, Any]]:
        return self._manager.logs(task_id, attempt, after_id, limit).result()

    def follow_logs_sync(self, task_id: str, attempt: int | None = None,
                         poll_s: float = 0.5) -> Iterator[dict[str, Any]]:
        """Every log line as it comes, until the task has finished and all are read."""
        after = 0
        while True:
            status, rows = self._manager.log_page(task_id, attempt, after, 1000).result()
            finished = status.finished
            yield from rows
            if rows:
                after = rows[-1]["id"]
            elif finished:
                return
            else:
                time.sleep(poll_s)

    # -------------------------------------------------------------- schedules

    async def create_schedule(self, request: ScheduleCreateRequest) -> Schedule:
        """Store a schedule: ``request.template`` is created at every run of its rule."""
        return await self._manager.create_schedule(request)

    def create_schedule_sync(self, request: ScheduleCreateRequest) -> Schedule:
        return self._manager.create_schedule(request).result()

    async def list_schedules(self, owner: str | None = None) -> list[Schedule]:
        return await self._manager.list_schedules(owner)

    def list_schedules_sync(self, owner: str | None = None) -> list[Schedule]:
        return self._manager.list_schedules(owner).result()

    def get_schedule_sync(self, schedule_id: str) -> Schedule:
        return self._manager.get_schedule(schedule_id).result()

    async def get_schedule(self, schedule_id: str) -> Schedule:
        return await self._manager.get_schedule(schedule_id)

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self._manager.pause_schedule(schedule_id)

    def pause_schedule_sync(self, schedule_id: str) -> Schedule:
        return self._manager.pause_schedule(schedule_id).result()

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self._manager.resume_schedule(schedule_id)

    def resume_schedule_sync(self, schedule_id: str) -> Schedule:
        return self._manager.resume_schedule(schedule_id).result()

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._manager.delete_schedule(schedule_id)

    def delete_schedule_sync(self, schedule_id: str) -> None:
        self._manager.delete_schedule(schedule_id).result()

    async def next_runs(self, schedule_id: str, count: int = 5) -> list[dict[str, Any]]:
        """The next runs of a schedule: ``{"at": datetime, "provisional": bool, "deadline":
        datetime | None}`` (the deadline the run's task will carry, from ``ready_by``)."""
        return await self._manager.next_runs(schedule_id, count)

    def next_runs_sync(self, schedule_id: str, count: int = 5) -> list[dict[str, Any]]:
        return self._manager.next_runs(schedule_id, count).result()


class TaskQueueManager(_Facade):
    """Queue created tasks and look at the queues."""

    async def submit_task(self, task_id: str, priority: TaskPriority | None = None) -> Task:
        """Queue a created task (optionally at a new priority); repeating it is harmless."""
        return await self._manager.enqueue(task_id, priority)

    def submit_task_sync(self, task_id: str, priority: TaskPriority | None = None) -> Task:
        return self._manager.enqueue(task_id, priority).result()

    async def queue_stats(self) -> list[QueueStats]:
        return list(await self._manager.queue_stats())

    def queue_stats_sync(self) -> list[QueueStats]:
        return list(self._manager.queue_stats().result())


class TaskExecutionEngine(_Facade):
    """Run tasks on the executor pools and look at the executors."""

    async def execute_task(self, task_id: str, timeout_s: float | None = None) -> Any:
        """Queue the task if it is not yet, wait for it, and return its result.

        Raises:
            TaskFailedError: it ended FAILED or CANCELLED.
        """
        await self._manager.enqueue(task_id, None)
        return _result_or_raise(await TaskManager(self._rt).wait(task_id, timeout_s))

    def execute_task_sync(self, task_id: str, timeout_s: float | None = None) -> Any:
        self._manager.enqueue(task_id, None).result()
        return _result_or_raise(TaskManager(self._rt).wait_sync(task_id, timeout_s))

    def executors_sync(self) -> list[dict[str, Any]]:
        return self._get(self._rt.handle(rt.ENGINE).stats.remote())

    def ensure_pool_sync(self, task_type: str, workers: int | None = None) -> int:
        return self._get(self._rt.handle(rt.ENGINE).ensure_pool.remote(task_type, workers))


class ProgressTracker(_Facade):
    role = rt.TRACKER

    async def get_progress(self, task_id: str) -> TaskProgress:
        return _progress_or_raise(task_id, await self._await(
            self._actor.get_progress.remote(task_id)))

    def get_progress_sync(self, task_id: str) -> TaskProgress:
        return _progress_or_raise(task_id, self._get(self._actor.get_progress.remote(task_id)))


class TaskNotificationService(_Facade):
    """The event stream, and callbacks that run in this client's process."""

    role = rt.NOTIFIER

    async def events(self, after_id: int = 0, timeout_s: float = 10.0) -> list[TaskNotification]:
        return await self._await(self._actor.stream.remote(after_id, timeout_s))

    def events_sync(self, after_id: int = 0, timeout_s: float = 10.0) -> list[TaskNotification]:
        return self._get(self._actor.stream.remote(after_id, timeout_s))

    async def last_event_id(self) -> int:
        return await self._await(self._actor.last_event_id.remote())

    async def metrics_text(self) -> str:
        """Task metrics from the event stream, in the Prometheus text format."""
        return await self._await(self._actor.metrics_text.remote())

    def last_event_id_sync(self) -> int:
        return self._get(self._actor.last_event_id.remote())

    def subscribe(self, callback: Callable[[TaskNotification], None],
                  after_id: int | None = None,
                  task_ids: set[str] | None = None) -> Subscription:
        """Call ``callback`` (in a thread of this process) for every event after ``after_id``.

        Without ``after_id`` it starts from now. Events that happen while the
        notifier restarts are delivered once it is back (the stream resumes).
        """
        start = self.last_event_id_sync() if after_id is None else after_id
        return Subscription(self, callback, start, task_ids)


class Subscription:
    """A background thread that feeds events to a callback; ``close()`` stops it."""

    def __init__(self, service: TaskNotificationService,
                 callback: Callable[[TaskNotification], None], after_id: int,
                 task_ids: set[str] | None) -> None:
        self.last_event_id = after_id
        self._service, self._callback, self._task_ids = service, callback, task_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="raytasks-subscription")
        self._thread.start()
        atexit.register(self.close)  # never inside a Ray call while the interpreter exits

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._service.events_sync(self.last_event_id, timeout_s=1.0)
            except Exception:
                self._stop.wait(0.5)  # notifier restarting: resume from the same id
                continue
            for event in events:
                self.last_event_id = max(self.last_event_id, event.event_id)
                if self._task_ids is None or event.task_id in self._task_ids:
                    self._callback(event)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def register_task_type(
    name: str,
    handler: Handler,
    *,
    params_model: type[BaseModel] | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    max_concurrency: int | None = None,
    preemptible: bool = False,
    preempt_grace_s: float | None = None,
    workers: int | None = None,
    runtime: rt.Runtime | None = None,
) -> TaskTypeInfo:
    """Register (or replace) a task type from any client and start its executor pool.

    ``handler(params, ctx)`` receives an instance of ``params_model`` (or the
    raw dict without one) and a :class:`TaskExecutionContext`; what it returns
    (JSON-serialisable) is the task's result. A ``preemptible`` type's running tasks may
    be stopped for a deadline: its handler has ``preempt_grace_s`` to save a checkpoint
    once ``ctx.preempted`` is set, and resumes from ``ctx.checkpoint`` in a new attempt.
    """
    runtime = runtime or rt.current()
    spec = TaskTypeSpec(name, handler, params_model, timeout_s=timeout_s,
                        max_retries=max_retries, max_concurrency=max_concurrency,
                        preemptible=preemptible, preempt_grace_s=preempt_grace_s)
    info = runtime.manager.register_type(spec.dumps()).result()
    runtime.session.types.add(spec, info.version)
    Call[int](runtime.handle(rt.ENGINE).ensure_pool.remote(name, workers)).result()
    return info


def _new_id() -> str:
    return uuid.uuid4().hex


def _new_ids(requests: list[TaskCreateRequest]) -> list[str]:
    # ids are made here so that a call retried after a manager restart is idempotent
    return [_new_id() for _ in requests]


def _collected(watcher: Watcher, task_ids: list[str], futures: list[Future[Task]],
               timeout_s: float | None) -> list[Task]:
    """The finished tasks; a waiter that gives up leaves no future behind."""
    unfinished = [t for t, f in zip(task_ids, futures, strict=True) if not f.done()]
    if unfinished:
        for task_id, future in zip(task_ids, futures, strict=True):
            if not future.done():
                watcher.forget(task_id, future)
        raise WaitTimeoutError(unfinished, timeout_s or 0.0)
    return [f.result() for f in futures]


def _result_or_raise(task: Task) -> Any:
    if task.status is not TaskStatus.COMPLETED:
        raise TaskFailedError(task.id, task.status.value,
                              task.error.reason if task.error else None,
                              task.error.message if task.error else None)
    return task.result


def _progress_or_raise(task_id: str, progress: TaskProgress | None) -> TaskProgress:
    if progress is None:
        raise TaskNotFoundError(task_id)
    return progress


def _tasks(sent: list[NewTask], answers: list[Ack | Task]) -> list[Task]:
    return [new_task(s, a) if isinstance(a, Ack) else a
            for s, a in zip(sent, answers, strict=True)]
