"""A client's session with the manager: the one place a submit's route is chosen, and the
one way finished tasks come back.

Routes, tried in this order for each combined batch of submit calls (:meth:`_send`):

1. :class:`~raytasks.runtime.loans.LoanRoute`: a lone plain task, run on an executor
   the manager lent this client;
2. :class:`~raytasks.runtime.intake.IntakeRoute`: plain calls committed by this client;
3. the manager (``ManagerApi.submit``): everything else.

Every wait rides the :class:`~raytasks.client.Watcher`: finished tasks come back as ids
(from the manager's stream, a ``watch`` answer, or this client's lent runs) and are read
by :meth:`ClientSession.read`, from the store where this client reaches it, else from
the manager.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from functools import partial
from typing import Any

import ray

from ..client import ClientTypes, Combiner, PerLoop, Watcher
from ..errors import TaskNotFoundError
from ..messages import NewTask, WatchAnswer
from ..models import Task
from ..settings import Settings
from ..store.base import with_artifact
from .calls import ManagerCalls
from .intake import IntakeRoute
from .loans import LoanRoute

log = logging.getLogger(__name__)

Answer = list[Any] | BaseException  # a call's Acks and Tasks, or the error refusing it


class ClientSession:
    """Per client (one per :class:`~raytasks.runtime.Runtime`): its routes and its waits."""

    def __init__(self, settings: Settings, manager: ManagerCalls) -> None:
        self.settings = settings
        self.manager = manager
        self.types = ClientTypes()
        self.watcher = Watcher(self._watch, self._poll, self.read)
        self.intake = IntakeRoute(manager, settings.store_busy_timeout_s) \
            if settings.direct_intake else None
        self.loans = LoanRoute(manager, self.intake, self.watcher, settings.namespace,
                               settings.heartbeat_interval_s) \
            if self.intake is not None and settings.executor_loan_s > 0 else None
        self._closing = False
        self.read_here = 0  # finished tasks read from the store here
        # before Ray's own exit hook (registered earlier, so run later): no thread may be
        # inside a Ray call while the interpreter exits, or the process exits with 1
        atexit.register(self.close)
        # concurrent calls go together: one batch per route, one manager call, one commit
        self._sync: dict[bool, Combiner[list[NewTask], list[Any]]] = {
            flag: Combiner(partial(self._send, enqueue=flag)) for flag in (True, False)}
        self._async: dict[bool, PerLoop[list[NewTask], list[Any]]] = {
            flag: PerLoop(partial(self._send_async, enqueue=flag)) for flag in (True, False)}

    def submit(self, calls: list[NewTask], enqueue: bool) -> list[Any]:
        """One call's answers (blocking): an Ack or Task per request, or raises its error."""
        return self._sync[enqueue].call(calls)

    async def submit_async(self, calls: list[NewTask], enqueue: bool) -> list[Any]:
        return await self._async[enqueue].call(calls)

    # ------------------------------------------------------------------ routes

    def _here(self, calls: list[list[NewTask]], enqueue: bool) -> list[Answer | None]:
        """The routes that answer in this process: per call its answer, or None where it
        goes to the manager."""
        out: list[Answer | None] = [None] * len(calls)
        if not enqueue:  # a create without a queue: the manager's
            return out
        if self.loans is not None and self.loans.takes(calls):
            out[0] = self.loans.submit(calls[0])
        rest = [i for i, a in enumerate(out) if a is None]
        if self.intake is not None and rest and any(self.intake.takes(calls[i]) for i in rest):
            for i, answer in zip(rest, self.intake.submit([calls[i] for i in rest]),
                                 strict=True):
                out[i] = answer
        return out

    def _send(self, calls: list[list[NewTask]], enqueue: bool) -> list[Answer]:
        out = self._here(calls, enqueue)
        rest = [c for c, a in zip(calls, out, strict=True) if a is None]
        if rest:
            try:
                answers: list[Any] = self.manager.submit(rest, enqueue).result()
            except Exception as exc:  # those calls only: the others are committed
                answers = [exc] * len(rest)
            out = _merge(out, answers)
        return out  # type: ignore[return-value]  # _merge filled every None

    async def _send_async(self, calls: list[list[NewTask]], enqueue: bool) -> list[Answer]:
        out = self._here(calls, enqueue)
        rest = [c for c, a in zip(calls, out, strict=True) if a is None]
        if rest:
            try:
                answers: list[Any] = await self.manager.submit(rest, enqueue)
            except Exception as exc:  # those calls only: the others are committed
                answers = [exc] * len(rest)
            out = _merge(out, answers)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------- waits

    def read(self, task_ids: list[str]) -> list[Task]:
        """Finished tasks, results loaded: from the store where this client has it open
        (its intake's: reading and sending every finished task was a large share of the
        manager's work), else from the manager. Ids that no longer exist are left out."""
        store = self.intake.store if self.intake is not None else None
        if store is not None:
            try:
                found = store.get_many(task_ids)
                self.read_here += len(found)
                return [with_artifact(found[t]) for t in task_ids if t in found]
            except Exception as exc:  # a store or a result file out of reach
                log.info("reading finished tasks here failed (%s); asking the manager", exc)
        found_there = {t.id: t for t in self._get_present(task_ids)}
        return [found_there[t] for t in task_ids if t in found_there]

    def _get_present(self, task_ids: list[str]) -> list[Task]:
        try:
            return self.manager.get_many(task_ids).result()
        except TaskNotFoundError:  # one was deleted as it ended: the others one by one
            tasks = []
            for task_id in task_ids:
                with contextlib.suppress(TaskNotFoundError):
                    tasks.append(self.manager.get(task_id).result())
            return tasks

    def _watch(self, session: str, task_ids: list[str]) -> WatchAnswer:
        return self.manager.watch(session, task_ids).result()

    def _poll(self, session: str, timeout_s: float) -> list[str] | None:
        """The stream's next finished ids. Short waits: a closing client leaves the call at
        once. One that is only done waiting reads the answer still: the call may name
        tasks of its waits, which no later poll would bring (each is named once)."""
        call = self.manager.finished_ids(session, timeout_s)
        deadline = time.monotonic() + timeout_s + 30
        while ray.is_initialized() and not call.done(0.2):
            if self._closing:
                return []
            if time.monotonic() > deadline:
                raise TimeoutError("the manager did not answer the wait stream")
        if not ray.is_initialized():
            return []
        return call.result()

    def close(self) -> None:
        """Stop the routes' threads and the wait stream (at exit, or on disconnect)."""
        self._closing = True
        if self.loans is not None:
            self.loans.close()
        if self.intake is not None:
            self.intake.close()
        self.watcher.stop()


def _merge(here: list[Answer | None], answers: list[Any]) -> list[Answer | None]:
    """Each call's answer: this process's, or else the manager's (in order)."""
    manager = iter(answers)
    return [h if h is not None else next(manager) for h in here]


__all__ = ["ClientSession"]
