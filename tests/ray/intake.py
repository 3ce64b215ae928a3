"""What the intake and lent-run tests share: a sleepy request, the store's intake rows,
and a task's status events in order."""

from __future__ import annotations

from typing import Any

from raytasks import TaskCreateRequest, TaskNotificationService
from raytasks.store import open_store

#: request fields a test may pass beside the handler's parameters
REQUEST_FIELDS = ("depends_on", "max_retries")


def sleep_request(seconds: float = 0.0, **params: Any) -> TaskCreateRequest:
    """A ``sleepy`` task; ``depends_on`` and ``max_retries`` go to the request, the rest to
    its parameters."""
    extra = {k: params.pop(k) for k in REQUEST_FIELDS if k in params}
    return TaskCreateRequest(name="sleep", task_type="sleepy",
                             parameters={"seconds": seconds, **params}, **extra)


def intake_rows(service: Any) -> list[tuple[str, float]]:
    """The intake rows still unclaimed in ``service``'s store."""
    store = open_store(service.settings.store_url)
    try:
        return store.intake_rows()
    finally:
        store.close()


def statuses(service: Any, task_id: str) -> list[str]:
    """The statuses of ``task_id``'s events, in the stream's order."""
    events = TaskNotificationService(service).events_sync(0, timeout_s=0)
    return [e.status for e in events if e.task_id == task_id and e.kind == "status"]
