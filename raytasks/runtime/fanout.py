"""Fanning one function out over many calls, for handlers that split their work.

A handler running inside Ray (an executor's worker) may spread its work over the
cluster: :class:`Fanout` runs each call as a Ray task of one CPU, or in this
process when Ray is not up here (a handler called directly, in a unit test or a
notebook). Handlers import this module inside the function that fans out, so
importing a handler never starts or imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import ray

if TYPE_CHECKING:
    from ..context import TaskExecutionContext

R = TypeVar("R")

#: how long one wait for a finished call lasts before cancellation is checked again
WAIT_S = 0.5


class Fanout(Generic[R]):
    """``fn(*shared, *call)`` for each call, as parallel Ray tasks when Ray is up.

    Args:
        fn: a module-level function (Ray ships it to workers by reference).
        shared: the leading arguments every call takes; put in Ray's object store
            once, however many calls and :meth:`map` rounds use them.
        parallel: ``False`` runs every call in this process even when Ray is up
            (one call gains nothing from a Ray task).
    """

    def __init__(self, fn: Callable[..., R], *shared: Any, parallel: bool = True) -> None:
        self.fn = fn
        self.parallel = parallel and ray.is_initialized()
        self._remote = ray.remote(num_cpus=1)(fn) if self.parallel else None
        self._shared = [ray.put(s) for s in shared] if self.parallel else list(shared)

    def map(self, calls: Sequence[tuple[Any, ...]], ctx: TaskExecutionContext | None = None,
            progress: Callable[[int, int], None] | None = None,
            on_result: Callable[[int, R], None] | None = None) -> list[R]:
        """The results of ``calls``, in their order.

        ``on_result(i, result)`` is called as call ``i`` finishes, in whatever order they
        finish (a handler checkpoints there). After it, while calls remain: when ``ctx``'s
        attempt was cancelled or preempted, the calls still running are cancelled and
        ``ctx.check_cancelled()`` raises. In parallel, ``progress(done, total)`` then
        reports; in this process it is not called (the calls run one after another).
        """
        if self._remote is None:
            results: list[R] = []
            for i, call in enumerate(calls):
                results.append(self.fn(*self._shared, *call))
                if on_result is not None:
                    on_result(i, results[-1])
                if ctx is not None and i + 1 < len(calls):
                    ctx.check_cancelled()
            return results
        pending = [self._remote.remote(*self._shared, *call) for call in calls]
        if ctx is None and progress is None and on_result is None:
            results = ray.get(pending)
            return results
        order = {ref: i for i, ref in enumerate(pending)}
        done: dict[int, R] = {}
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    done[order[ref]] = ray.get(ref)
                    if on_result is not None:
                        on_result(order[ref], done[order[ref]])
                if ctx is not None and pending:
                    ctx.check_cancelled()
                if progress is not None:
                    progress(len(done), len(order))
        except BaseException:
            # a stop, a failed call or a failing callback: free the CPUs the rest still hold
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [done[i] for i in range(len(order))]
