"""A client's session with the manager: its fast submit path and its one wait stream.

Ray glue around :mod:`raytasks.client` (pure): the combiners send coalesced submits as
one ``manager.submit`` call, the watcher polls ``manager.finished`` (or ``finished_ids``,
then reads the tasks from the store itself where it reaches it).
"""

from __future__ import annotations

import atexit
import logging
import time
from typing import Any

import ray

from ..client import ClientTypes, Combiner, PerLoop, Watcher
from ..errors import RaytasksError
from ..messages import Ack, NewTask, WatchAnswer
from ..models import Task
from ..settings import Settings
from ..store.base import with_artifact
from .actors import MANAGER, get
from .direct import DirectIntake

log = logging.getLogger(__name__)


class ClientSession:
    """Per client (one per :class:`~raytasks.runtime.Runtime`): combiners and a watcher."""

    def __init__(self, settings: Settings, manager: Any) -> None:
        self.settings = settings
        self._manager = manager
        self.types = ClientTypes()
        self.watcher = Watcher(self._watch, self._finished)
        self.direct = DirectIntake(manager, settings.store_busy_timeout_s,
                                   settings.namespace, self.watcher)
        self._closing = False
        self.read = 0  # finished tasks the wait stream read from the store here
        # before Ray's own exit hook (registered earlier, so run later): no thread may be
        # inside a Ray call while the interpreter exits, or the process exits with 1
        atexit.register(self.close)
        # a combined call answers each caller with (its results, whether they were watched)
        self._sync: dict[bool, Combiner[list[NewTask], tuple[list[Any], bool]]] = {
            flag: Combiner(self._sender(flag)) for flag in (True, False)}
        self._async: dict[bool, PerLoop[list[NewTask], tuple[list[Any], bool]]] = {
            flag: PerLoop(self._async_sender(flag)) for flag in (True, False)}

    def submit(self, calls: list[NewTask], enqueue: bool) -> list[Any]:
        """One call's answers (blocking): an Ack or Task per request, or raises its error.

        Plain submits are committed here when they can be (the direct intake), the
        others sent to the manager; concurrent calls go together either way."""
        return self._noted(self._sync[enqueue].call(calls))

    async def submit_async(self, calls: list[NewTask], enqueue: bool) -> list[Any]:
        return self._noted(await self._async[enqueue].call(calls))

    def _direct(self, calls: list[list[NewTask]], enqueue: bool,
                session: str | None) -> list[Any]:
        """Per call: its answer from the direct intake (Acks, or the error that refused
        it), or None where it must go to the manager."""
        if not enqueue or not self.settings.direct_intake:
            return [None] * len(calls)
        return [a if a is None or isinstance(a, BaseException) else (a, session is not None)
                for a in self.direct.submit(calls, session)]

    def _noted(self, answer: tuple[list[Any], bool]) -> list[Any]:
        """The answers; tasks the manager put in this client's wait stream are noted, so a
        wait on them needs no call of its own."""
        results, watched = answer
        if watched:
            self.watcher.note([a.id for a in results if isinstance(a, Ack)])
        return results

    def _watching(self) -> str | None:
        # once this client has waited, its new tasks join its session: a wait on them
        # then needs no call (if it never comes, the session expires on the manager)
        return self.watcher.session if self.watcher.used else None

    def _sender(self, enqueue: bool) -> Any:
        def send(calls: list[list[NewTask]]) -> list[Any]:
            session = self._watching()
            out = self._direct(calls, enqueue, session)
            rest = [c for c, a in zip(calls, out, strict=True) if a is None]
            if rest:
                try:
                    answers = _unwrapped(lambda: get(self._manager.submit.remote(
                        rest, enqueue, session)))
                except Exception as exc:  # those calls only: the others are committed
                    answers = [exc] * len(rest)
                out = _merge(out, answers, session)
            return out
        return send

    def _async_sender(self, enqueue: bool) -> Any:
        async def send(calls: list[list[NewTask]]) -> list[Any]:
            session = self._watching()
            out = self._direct(calls, enqueue, session)
            rest = [c for c, a in zip(calls, out, strict=True) if a is None]
            if rest:
                try:
                    answers: list[Any] = await self._manager.submit.remote(rest, enqueue,
                                                                           session)
                except Exception as exc:  # those calls only: the others are committed
                    answers = [unwrap(exc)] * len(rest)
                out = _merge(out, answers, session)
            return out
        return send

    def _watch(self, session: str, task_ids: list[str]) -> WatchAnswer:
        answer: WatchAnswer = _unwrapped(lambda: get(self._manager.watch.remote(session,
                                                                               task_ids)))
        return answer

    def _finished(self, session: str, timeout_s: float) -> list[Task] | None:
        """The next tasks the stream brings. Where this client reaches the store (its
        direct intake's), the manager names them and they are read here: reading and
        sending every finished task was a large share of the manager's work."""
        store = self.direct.reader() if self.settings.direct_intake else None
        ask = self._manager.finished if store is None else self._manager.finished_ids
        ref = ask.remote(session, timeout_s)
        deadline = time.monotonic() + timeout_s + 30
        # short waits: a closing client leaves Ray's call at once. One that is only done
        # waiting reads the answer still: the call may carry tasks its submits put in the
        # session, which no later poll would bring (the manager hands each out once)
        while ray.is_initialized() and not ray.wait([ref], timeout=0.2)[0]:
            if self._closing:
                return []
            if time.monotonic() > deadline:
                raise TimeoutError("the manager did not answer the wait stream")
        if not ray.is_initialized():
            return []
        answer: list[Any] | None = get(ref)
        if store is None or not answer:
            return answer
        try:
            found = store.get_many(answer)
            tasks = [with_artifact(found[t]) for t in answer if t in found]
            self.read += len(tasks)
            return tasks
        except Exception as exc:  # a store or a result file out of reach: the manager's
            log.info("reading finished tasks here failed (%s); asking the manager", exc)
            return self._watch(session, answer).finished

    def close(self) -> None:
        """Stop the wait stream (at exit, or when this client disconnects)."""
        self._closing = True
        self.direct.close()
        self.watcher.stop()


def _merge(direct: list[Any], answers: list[Any], session: str | None) -> list[Any]:
    """Each call's answer: the direct intake's, or else the manager's (in order)."""
    manager = iter(answers)
    return [d if d is not None else a if isinstance(a := next(manager), BaseException)
            else (a, session is not None) for d in direct]


def unwrap(exc: BaseException) -> BaseException:
    """Ray wraps an actor's exception; give the caller raytasks' own error back."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RaytasksError):
        return cause
    return exc


def _unwrapped(fn: Any) -> Any:
    try:
        return fn()
    except ray.exceptions.RayTaskError as exc:
        raise unwrap(exc) from None


__all__ = ["MANAGER", "ClientSession", "unwrap"]
