"""The raytasks exception hierarchy: one root, one base per concern.

Every exception keeps the data it was built from (``self.data``) and pickles
back to itself, because Ray re-raises an actor's exception in the caller.
A task's *own* failure is never raised through here; it is stored as
:class:`raytasks.models.TaskError` data.
"""

from __future__ import annotations

from typing import Any


class RaytasksError(Exception):
    """Root of every error raytasks raises on purpose."""

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.data))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[RaytasksError], message: str, data: dict[str, Any]) -> RaytasksError:
    err = cls.__new__(cls)
    RaytasksError.__init__(err, message, **data)
    return err


# --- tasks -----------------------------------------------------------------


class TaskError(RaytasksError):
    """A request about a task cannot be honoured."""


class TaskNotFoundError(TaskError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}", task_id=task_id)


class ScheduleNotFoundError(TaskNotFoundError):
    def __init__(self, schedule_id: str) -> None:
        RaytasksError.__init__(self, f"no schedule with id {schedule_id!r}",
                               schedule_id=schedule_id)


class UnknownTaskTypeError(TaskError):
    """``errors`` names the field, as :class:`InvalidParametersError` does."""

    def __init__(self, task_type: str, known: list[str], field: str = "task_type") -> None:
        message = (f"unknown task type {task_type!r}; registered types are: "
                   f"{', '.join(sorted(known))}")
        super().__init__(message, task_type=task_type, known=sorted(known),
                         errors=[{"field": field, "reason": message}])


class InvalidParametersError(TaskError):
    """Parameters (or another request field) failed validation.

    ``errors`` is a list of ``{"field": "parameters.stock_code", "reason": "..."}``.
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        super().__init__(f"invalid request: {detail}", errors=errors)

    @property
    def errors(self) -> list[dict[str, str]]:
        return list(self.data["errors"])


class PayloadTooLargeError(TaskError):
    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(
            f"{field} is {size} bytes, over the limit of {limit} bytes; "
            "pass large inputs by reference (a path or an artifact id)",
            field=field,
            size=size,
            limit=limit,
        )


class InvalidTransitionError(TaskError):
    def __init__(self, task_id: str, current: str, target: str) -> None:
        super().__init__(
            f"task {task_id} is {current}; it cannot become {target}",
            task_id=task_id,
            current=current,
            target=target,
        )


class TaskFailedError(TaskError):
    """Raised by ``wait``/``execute_task`` when the awaited task did not complete."""

    def __init__(self, task_id: str, status: str, reason: str | None, message: str | None) -> None:
        super().__init__(
            f"task {task_id} ended {status}"
            + (f" ({reason}): {message}" if reason else ""),
            task_id=task_id,
            status=status,
            reason=reason,
            error_message=message,
        )


class WaitTimeoutError(TaskError):
    def __init__(self, task_ids: list[str], timeout_s: float) -> None:
        super().__init__(
            f"{len(task_ids)} task(s) still unfinished after {timeout_s:g} s: "
            + ", ".join(task_ids[:5]),
            task_ids=task_ids,
            timeout_s=timeout_s,
        )


# --- scheduling --------------------------------------------------------------


class SchedulingError(RaytasksError):
    """The queueing layer refused a request."""


class QueueFullError(SchedulingError):
    def __init__(self, queue: str, size: int, limit: int) -> None:
        super().__init__(
            f"queue {queue!r} is full ({size} of {limit} tasks waiting); "
            "retry later or raise max_queue_size",
            queue=queue,
            size=size,
            limit=limit,
        )


class QuotaExceededError(SchedulingError):
    """An owner is at one of its limits (``Settings.quotas``); try again later."""

    def __init__(self, owner: str, limit: str, value: int, allowed: int) -> None:
        super().__init__(
            f"owner {owner!r} is at its limit {limit}={allowed} ({value} with this request); "
            "wait for some of its tasks to finish",
            owner=owner, limit=limit, value=value, allowed=allowed,
        )


class StaleLeaseError(SchedulingError):
    """A report carried a fencing token that is no longer the task's lease."""

    def __init__(self, task_id: str, token: int) -> None:
        super().__init__(
            f"report for task {task_id} carries stale lease token {token}; it was ignored",
            task_id=task_id,
            token=token,
        )


# --- execution ---------------------------------------------------------------


class ExecutionError(RaytasksError):
    """Raised inside handlers by the execution context."""


class TaskCancelledError(ExecutionError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was cancelled", task_id=task_id)


class TaskPreemptedError(ExecutionError):
    """The scheduler wants the executor back for a task with a deadline: the attempt ends,
    and the task runs again later from its checkpoint (not counted as a retry)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} was preempted", task_id=task_id)


class TaskTimeoutError(ExecutionError):
    def __init__(self, task_id: str, timeout_s: float) -> None:
        super().__init__(
            f"task {task_id} ran over its timeout of {timeout_s:g} s",
            task_id=task_id,
            timeout_s=timeout_s,
        )


# --- store, notification, settings --------------------------------------------


class StoreError(RaytasksError):
    """The task store cannot be opened or is at an unknown schema version."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached now (a database restarting or cut off, a SQLite file
    another process holds locked): nothing was written; try again in a few seconds.

    ``reason`` says what the store answered; ``kind`` is the HTTP API's error name.
    """

    kind = "StoreUnavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(f"the task store is unavailable ({reason}); nothing was written, "
                         "try again in a few seconds", reason=reason)


class StoreFullError(StoreError):
    """The filesystem under the store (or the artifacts or logs) is full: nothing was
    written. Free space at ``path``; work resumes by itself once there is some."""

    kind = "StoreFull"

    def __init__(self, path: str, reason: str = "no space left on device") -> None:
        super().__init__(f"the task store is full at {path} ({reason}); nothing was "
                         "written: free space there and try again", path=path, reason=reason,
                         where=path.rstrip("/").rsplit("/", 1)[-1])


class NotificationError(RaytasksError):
    """A notification could not be accepted."""


class SettingsError(RaytasksError):
    """The settings are inconsistent."""


class NotConnectedError(RaytasksError):
    """The raytasks service is not reachable."""
