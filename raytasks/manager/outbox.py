"""The outbox: status events are rows committed in the same transaction as the change."""

from __future__ import annotations

import json
from typing import Any

from ..models import TaskStatus
from ..store.base import to_json


def status_event(*, task_id: str, task_type: str, owner: str | None, attempt: int,
                 priority: int, previous: TaskStatus | None, status: TaskStatus, now: float,
                 error: str | None = None, cpu_s: float | None = None) -> dict[str, Any]:
    """The event row of one status change (``error`` is the stored error JSON; ``cpu_s``
    what the attempt that ended used)."""
    payload = {"task_id": task_id, "status": status.value,
               "previous": previous.value if previous else None, "attempt": attempt,
               "priority": int(priority), "task_type": task_type, "owner": owner,
               "error": json.loads(error) if error else None, "at": now}
    if cpu_s is not None:
        payload["cpu_s"] = cpu_s
    return {"task_id": task_id, "kind": "status", "payload": to_json(payload),
            "created_at": now}
