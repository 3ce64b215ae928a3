"""The client side of the fast path: validate here, coalesce calls, multiplex waits.

- :func:`compact` validates a request's parameters in the client, where the type's model
  is known (built-ins, and types this client registered), and packs it as a
  :class:`NewTask`: the manager's event loop does only what must be serialised.
- :class:`Combiner` / :class:`AsyncCombiner`: a call made while another is in flight
  waits and goes with the next one, so concurrent single submits from one client become
  one actor call and one commit, and a lone call goes at once (no added latency).
- :class:`Watcher`: every wait of a client rides one long poll on the manager
  (``finished``), however many tasks it waits for.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from .errors import InvalidParametersError, TaskNotFoundError
from .handlers import BUILTIN_TYPES
from .messages import Ack, NewTask, WatchAnswer
from .models import Task, TaskCreateRequest, TaskPriority, TaskStatus
from .registry import TaskTypeSpec, validate_parameters

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

#: Most items one combined call carries.
MAX_COMBINED = 1000
#: Finished tasks of this client's session kept until someone waits for them.
EARLY_KEPT = 10_000


class ClientTypes:
    """The task types whose parameter models this client can run, with their versions."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskTypeSpec] = {s.name: s for s in BUILTIN_TYPES}

    def add(self, spec: TaskTypeSpec, version: int) -> None:
        self._specs[spec.name] = TaskTypeSpec(**{**spec.__dict__, "version": version})

    def get(self, name: str) -> TaskTypeSpec | None:
        return self._specs.get(name)


def compact(requests: list[TaskCreateRequest], types: ClientTypes,
            max_parameters_bytes: int) -> list[NewTask]:
    """Validate parameters where the model is known, and pack each request with a new id.

    Raises:
        InvalidParametersError, PayloadTooLargeError: as the manager would (same fields).
    """
    out = []
    for i, req in enumerate(requests):
        spec = types.get(req.task_type)
        params, version, units = req.parameters, None, None
        if spec is not None and spec.params_model is not None:
            try:
                params = validate_parameters(spec, req.parameters, max_parameters_bytes)
            except InvalidParametersError as exc:
                prefix = f"requests[{i}]." if len(requests) > 1 else ""
                raise InvalidParametersError(
                    [{"field": prefix + e["field"], "reason": e["reason"]}
                     for e in exc.errors]) from None
            version, units = spec.version, spec.work_units(params)
        out.append(NewTask(
            uuid.uuid4().hex, req.name, req.task_type, params, int(req.priority), req.queue,
            req.timeout_s, req.max_retries, tuple(req.depends_on), req.idempotency_key,
            tuple(req.tags), req.owner, tuple(req.notify), version, units))
    return out


def new_task(sent: NewTask, ack: Ack) -> Task:
    """The Task a created :class:`NewTask` stands for, built here from what was sent."""
    when = datetime.fromtimestamp(ack.created_at, tz=UTC)
    return Task.model_construct(
        id=sent.id, name=sent.name, task_type=sent.task_type, status=TaskStatus.PENDING,
        priority=TaskPriority(sent.priority), queue=sent.queue, parameters=sent.parameters,
        attempt=0, max_retries=ack.max_retries, timeout_s=ack.timeout_s,
        depends_on=list(sent.depends_on),
        idempotency_key=sent.idempotency_key, tags=list(sent.tags), owner=sent.owner,
        notify=list(sent.notify), result=None, result_uri=None, error=None,
        cancel_requested=False, lease_token=0, not_before=None, created_at=when,
        updated_at=when, started_at=None, finished_at=None)


class Combiner(Generic[I, R]):
    """Blocking calls that arrive while one is in flight are sent together next.

    ``send`` gets the items and answers one result per item; a result that is an
    exception is raised in that item's caller only. The caller whose call finds the
    combiner idle sends it itself (no thread hop); when its call returns with items
    queued, the first of those callers sends the next batch.
    """

    def __init__(self, send: Callable[[list[I]], list[Any]]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._queue: list[_Slot[I]] = []
        self._busy = False

    def call(self, item: I) -> R:
        slot: _Slot[I] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.ready.wait()
            if not slot.lead:
                return slot.result()
        self._drain()
        return slot.result()

    def _drain(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[:MAX_COMBINED], self._queue[MAX_COMBINED:]
        try:
            results = self._send([s.item for s in batch])
        except BaseException as exc:  # the call itself failed: every caller in it hears it
            results = [exc] * len(batch)
        for slot, result in zip(batch, results, strict=True):
            slot.answer(result)
        with self._lock:
            if self._queue:
                self._queue[0].lead = True  # it sends the next batch
                self._queue[0].ready.set()
            else:
                self._busy = False


class _Slot(Generic[I]):
    __slots__ = ("item", "lead", "outcome", "ready")

    def __init__(self, item: I) -> None:
        self.item = item
        self.ready = threading.Event()
        self.lead = False
        self.outcome: Any = None

    def answer(self, outcome: Any) -> None:
        self.outcome = outcome
        self.ready.set()

    def result(self) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class AsyncCombiner(Generic[I, R]):
    """:class:`Combiner` for coroutines on one event loop."""

    def __init__(self, send: Callable[[list[I]], Awaitable[list[Any]]]) -> None:
        self._send = send
        self._queue: list[tuple[I, asyncio.Future[Any]]] = []
        self._busy = False

    async def call(self, item: I) -> R:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._busy:
            self._busy = True
            # one turn of the loop first: calls made in the same turn (a gather of
            # submits) join this one instead of waiting for it
            await asyncio.sleep(0)
            await self._drain()
        outcome = await future
        if isinstance(outcome, BaseException):
            raise outcome
        result: R = outcome
        return result

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_COMBINED], self._queue[MAX_COMBINED:]
                try:
                    results = await self._send([item for item, _ in batch])
                except BaseException as exc:
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._busy = False


class PerLoop(Generic[I, R]):
    """One :class:`AsyncCombiner` per event loop (a combiner's futures belong to a loop)."""

    def __init__(self, send: Callable[[list[I]], Awaitable[list[Any]]]) -> None:
        self._send = send
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                 AsyncCombiner[I, R]] = \
            weakref.WeakKeyDictionary()

    async def call(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        combiner = self._by_loop.get(loop)
        if combiner is None:
            combiner = self._by_loop[loop] = AsyncCombiner(self._send)
        return await combiner.call(item)


class Watcher:
    """Futures of the tasks this client waits for, fed by one long poll on the manager.

    ``watch`` and ``finished`` are the manager's methods (blocking calls). After a
    manager restart the session is unknown (``finished`` answers None): every task
    still awaited is watched again.
    """

    def __init__(self, watch: Callable[[str, list[str]], WatchAnswer],
                 finished: Callable[[str, float], list[Task] | None]) -> None:
        self.session = uuid.uuid4().hex
        self._watch, self._finished = watch, finished
        self._lock = threading.Lock()
        self._futures: dict[str, list[Future[Task]]] = {}
        # tasks the stream delivered before anyone waited for them (a submit watched them)
        self._early: OrderedDict[str, Task] = OrderedDict()
        # tasks a submit already put in this session: waiting on them needs no watch call
        self._noted: OrderedDict[str, None] = OrderedDict()
        # tasks this client runs directly: their end comes from here, not from the stream
        self._direct: set[str] = set()
        self._undirected: OrderedDict[str, None] = OrderedDict()  # direct runs handed back
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.used = False  # once a wait used the session, submits join it
        self._register: Combiner[list[str], None] = Combiner(self._send_watch)

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the stream before this process leaves Ray, so no thread is inside a Ray
        call while the interpreter exits (``finished`` must return soon when asked)."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout_s)

    def note(self, task_ids: list[str]) -> None:
        """These tasks are in this client's session already (its submit put them there)."""
        with self._lock:
            for task_id in task_ids:
                # a direct run's end comes from the run, or its hand-back watches it
                if task_id not in self._direct and task_id not in self._undirected:
                    self._noted[task_id] = None
            while len(self._noted) > EARLY_KEPT:
                self._noted.popitem(last=False)

    def note_direct(self, task_id: str) -> None:
        """This client runs the task itself: its end is resolved here (``resolve``), or
        handed to the stream (``undirect``) if the run does not end it."""
        with self._lock:
            self._direct.add(task_id)

    def drop_direct(self, task_id: str) -> None:
        """A direct run whose task was never stored (nobody knows its id)."""
        with self._lock:
            self._direct.discard(task_id)

    def undirect(self, task_id: str) -> None:
        """A direct run did not end the task: the stream brings its end (if waited for)."""
        with self._lock:
            self._direct.discard(task_id)
            self._noted.pop(task_id, None)  # not in the stream: a wait must watch it
            self._undirected[task_id] = None
            while len(self._undirected) > EARLY_KEPT:
                self._undirected.popitem(last=False)
            waited = task_id in self._futures
        if waited:
            self._register.call([task_id])
            self._stream()

    def futures(self, task_ids: list[str]) -> list[Future[Task]]:
        """A future per id, resolved with the finished Task (or TaskNotFoundError)."""
        out, new = [], []
        with self._lock:
            for task_id in task_ids:
                future: Future[Task] = Future()
                out.append(future)
                early = self._early.pop(task_id, None)
                if early is not None:
                    future.set_result(early)
                    continue
                known = task_id in self._futures or task_id in self._direct \
                    or self._noted.pop(task_id, 0) is None
                self._futures.setdefault(task_id, []).append(future)
                if not known:
                    new.append(task_id)
            self.used = True
        if new:
            self._register.call(new)  # answers tasks that had already finished
        self._stream()
        return out

    def _streamed(self) -> list[str]:
        """The tasks waited for whose end the stream brings (call with the lock held)."""
        return [t for t in self._futures if t not in self._direct]

    def _stream(self) -> None:
        """Run the stream while someone waits for it, and until the poll it has open
        answers (a closing client leaves it at once: no thread is inside Ray at shutdown)."""
        with self._lock:
            if self._streamed() and not self.active:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="raytasks-watcher")
                self._thread.start()

    def forget(self, task_id: str, future: Future[Task]) -> None:
        """A waiter gave up (timeout): drop its future."""
        with self._lock:
            futures = self._futures.get(task_id)
            if futures is not None and future in futures:
                futures.remove(future)
                if not futures:
                    del self._futures[task_id]

    def _send_watch(self, batches: list[list[str]]) -> list[None]:
        answer = self._watch(self.session, [t for batch in batches for t in batch])
        self.resolve(answer.finished)
        for task_id in answer.missing:
            self._fail(task_id, TaskNotFoundError(task_id))
        return [None] * len(batches)

    def _loop(self) -> None:
        while True:
            with self._lock:
                waiting = self._streamed()
                if not waiting or self._stopping:  # nobody waits: stop (a wait starts again)
                    self._thread = None
                    return
            try:
                tasks = self._finished(self.session, 5.0)
            except SystemExit:  # this process is leaving Ray: stop quietly
                with self._lock:
                    self._thread = None
                return
            except Exception:
                if not self._stopping:
                    threading.Event().wait(0.5)  # the manager is restarting: poll again
                continue
            if tasks is None:  # a restarted manager forgot this session
                if waiting:
                    self._register.call(waiting)
                continue
            self.resolve(tasks)

    def resolve(self, tasks: list[Task]) -> None:
        """These tasks ended: answer who waits for them (or keep them for a later wait)."""
        for task in tasks:
            with self._lock:
                self._direct.discard(task.id)
                futures = self._futures.pop(task.id, None)
                if futures is None:
                    self._early[task.id] = task
                    while len(self._early) > EARLY_KEPT:
                        self._early.popitem(last=False)
                    continue
            for future in futures:
                if not future.done():
                    future.set_result(task)

    def _fail(self, task_id: str, exc: Exception) -> None:
        with self._lock:
            futures = self._futures.pop(task_id, [])
        for future in futures:
            if not future.done():
                future.set_exception(exc)
