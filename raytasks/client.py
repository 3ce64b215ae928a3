"""The client side of submits and waits: validate here, coalesce calls, multiplex waits.

- :func:`compact` validates a request's parameters in the client, where the type's model
  is known (built-ins, and types this client registered), and packs it as a
  :class:`NewTask`: the manager's event loop does only what must be serialised.
- :class:`Combiner` / :class:`AsyncCombiner`: a call made while another is in flight
  waits and goes with the next one, so concurrent single submits from one client become
  one actor call and one commit, and a lone call goes at once (no added latency).
- :class:`Watcher`: every wait of a client rides one long poll on the manager
  (``finished_ids``), however many tasks it waits for.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from .errors import InvalidParametersError, TaskNotFoundError
from .handlers import BUILTIN_TYPES
from .messages import Ack, NewTask, WatchAnswer
from .models import Task, TaskCreateRequest, TaskStatus
from .registry import TaskTypeSpec, validate_parameters
from .store.base import row_to_task

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

#: Most items one combined call carries.
MAX_COMBINED = 1000
#: Ids of finished tasks kept until someone waits for them.
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
            tuple(req.tags), req.owner, tuple(req.notify), version, units, req.max_cpu_s,
            req.deadline.timestamp() if req.deadline else None, req.cache))
    return out


def new_task(sent: NewTask, ack: Ack) -> Task:
    """The Task a created :class:`NewTask` stands for, built here from what was sent."""
    return row_to_task({
        "id": sent.id, "name": sent.name, "task_type": sent.task_type,
        "status": TaskStatus.PENDING, "priority": sent.priority, "queue": sent.queue,
        "parameters": sent.parameters, "max_retries": ack.max_retries,
        "timeout_s": ack.timeout_s, "depends_on": list(sent.depends_on),
        "idempotency_key": sent.idempotency_key, "tags": list(sent.tags),
        "owner": sent.owner, "notify": list(sent.notify), "created_at": ack.created_at,
        "max_cpu_s": sent.max_cpu_s, "deadline": sent.deadline,
        "work_units": sent.work_units})


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
    """Futures of the tasks this client waits for. Every end comes back one way: as task
    ids, read through the session's one reader (``read``), whether the ids came from the
    manager's stream (one long poll, however many tasks are awaited), from a ``watch``
    call's answer, or from this client's own lent runs (:meth:`ended`).

    ``watch``, ``poll`` and ``read`` are blocking calls (the manager's ``watch`` and
    ``finished_ids``; a read of the store, or of the manager). A poll that fails may have
    lost an answer, and a restarted manager forgets the session (``poll`` answers None):
    either way every task still awaited is watched again, so no end is lost.
    """

    def __init__(self, watch: Callable[[str, list[str]], WatchAnswer],
                 poll: Callable[[str, float], list[str] | None],
                 read: Callable[[list[str]], list[Task]]) -> None:
        self.session = uuid.uuid4().hex
        self._watch, self._poll, self._read = watch, poll, read
        self._lock = threading.Lock()
        self._futures: dict[str, list[Future[Task]]] = {}
        # tasks that ended before anyone waited for them (read when someone does)
        self._done: OrderedDict[str, None] = OrderedDict()
        # tasks this client runs itself (lent runs): their end comes from here
        self._local: set[str] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._lost = False  # the stream may have lost ends: watch everything again
        # tasks to watch: whoever finds no watch call under way sends them all, and what
        # comes meanwhile with the next, so waits neither queue up nor each make a call
        self._to_watch: list[str] = []
        self._watching = False

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the stream before this process leaves Ray, so no thread is inside a Ray
        call while the interpreter exits (``poll`` must return soon when asked)."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout_s)

    def futures(self, task_ids: list[str]) -> list[Future[Task]]:
        """A future per id, resolved with the finished Task (or TaskNotFoundError)."""
        out, new, done = [], [], []
        with self._lock:
            for task_id in task_ids:
                future: Future[Task] = Future()
                out.append(future)
                known = task_id in self._futures or task_id in self._local
                self._futures.setdefault(task_id, []).append(future)
                if self._done.pop(task_id, 0) is None:
                    done.append(task_id)
                elif not known:
                    new.append(task_id)
        if done:
            self.ended(done)
        if new:
            self._send_watch(new)  # answers tasks that had already finished
        self._stream()
        return out

    def forget(self, task_id: str, future: Future[Task]) -> None:
        """A waiter gave up (timeout): drop its future."""
        with self._lock:
            futures = self._futures.get(task_id)
            if futures is not None and future in futures:
                futures.remove(future)
                if not futures:
                    del self._futures[task_id]

    def local(self, task_id: str) -> None:
        """This client runs the task itself: its end is told here (:meth:`ended`), or
        handed to the stream (:meth:`unlocal`)."""
        with self._lock:
            self._local.add(task_id)

    def unlocal(self, task_id: str) -> None:
        """A lent run did not end the task here: the stream brings its end."""
        with self._lock:
            self._local.discard(task_id)
            waited = task_id in self._futures
        if waited:
            self._send_watch([task_id])
            self._stream()

    def ended(self, task_ids: list[str], known: dict[str, Task] | None = None) -> None:
        """These tasks finished: read those someone waits for (but those ``known``: this
        client has them as it stored them) and answer them; keep the others' ids for a
        later wait."""
        with self._lock:
            for task_id in task_ids:
                self._local.discard(task_id)
            waited = [t for t in task_ids if t in self._futures]
            for task_id in task_ids:
                if task_id not in self._futures:
                    self._done[task_id] = None
            while len(self._done) > EARLY_KEPT:
                self._done.popitem(last=False)
        if not waited:
            return
        found = {t: known[t] for t in waited if known and t in known}
        unread = [t for t in waited if t not in found]
        found.update((task.id, task) for task in (self._read(unread) if unread else ()))
        for task_id in waited:
            with self._lock:
                futures = self._futures.pop(task_id, [])
            task = found.get(task_id)
            for future in futures:
                if future.done():
                    continue
                if task is None:  # deleted as it ended
                    future.set_exception(TaskNotFoundError(task_id))
                else:
                    future.set_result(task)

    def _send_watch(self, task_ids: list[str]) -> None:
        """Watch ``task_ids`` in this client's session: at once if no watch call is under
        way (then this caller also sends what others add meanwhile), else with the next.
        A call that fails leaves the stream to watch everything awaited again."""
        with self._lock:
            self._to_watch += task_ids
            if self._watching:
                return
            self._watching = True
        try:
            while True:
                with self._lock:
                    batch, self._to_watch = self._to_watch, []
                    if not batch:
                        self._watching = False
                        return
                answer = self._watch(self.session, batch)
                self.ended(answer.finished)
                for task_id in answer.missing:
                    self._fail(task_id, TaskNotFoundError(task_id))
        except Exception:
            with self._lock:
                self._watching, self._lost = False, True
            if not self._stopping:
                self._stream()

    def _streamed(self) -> list[str]:
        """The tasks waited for whose end the stream brings (call with the lock held)."""
        return [t for t in self._futures if t not in self._local]

    def _stream(self) -> None:
        """Run the stream while someone waits for it, and until the poll it has open
        answers (a closing client leaves it at once: no thread is inside Ray at shutdown)."""
        with self._lock:
            if self._streamed() and not self.active:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="raytasks-watcher")
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                waiting = self._streamed()
                if not waiting or self._stopping:  # nobody waits: stop (a wait starts again)
                    self._thread = None
                    return
            try:
                if self._lost:  # what the stream may have lost is asked for again
                    self._lost = False
                    self._send_watch(waiting)
                ended = self._poll(self.session, 5.0)
                if ended is None:  # a restarted manager forgot this session
                    self._lost = True
                    continue
                self.ended(ended)
            except SystemExit:  # this process is leaving Ray: stop quietly
                with self._lock:
                    self._thread = None
                return
            except Exception:  # the manager is restarting: its answer may be lost
                self._lost = True
                if not self._stopping:
                    threading.Event().wait(0.5)

    def _fail(self, task_id: str, exc: Exception) -> None:
        with self._lock:
            futures = self._futures.pop(task_id, [])
        for future in futures:
            if not future.done():
                future.set_exception(exc)
