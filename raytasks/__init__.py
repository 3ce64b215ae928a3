"""raytasks: durable, prioritised, leased task management on Ray.

The facades and ``connect`` load on first use (PEP 562): a process that imports
one part of raytasks (a system actor, an executor, the CLI) pays only for that
part, not for Ray's client side and every actor's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .context import TaskExecutionContext
from .errors import (
    ExecutionError,
    InvalidParametersError,
    InvalidTransitionError,
    NotificationError,
    PayloadTooLargeError,
    QueueFullError,
    QuotaExceededError,
    RaytasksError,
    SchedulingError,
    StoreError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TaskPreemptedError,
    UnknownTaskTypeError,
    WaitTimeoutError,
)
from .models import (
    QueuedTask,
    QueueStats,
    Task,
    TaskCreateRequest,
    TaskErrorInfo,
    TaskPriority,
    TaskProgress,
    TaskProgressNotification,
    TaskQuery,
    TaskStatus,
    TaskStatusNotification,
    TaskSummary,
    TaskUpdateRequest,
)
from .schedules import Schedule, ScheduleCreateRequest, ScheduleRule, TradingRule
from .settings import Settings

if TYPE_CHECKING:
    from .api import (
        ProgressTracker,
        Subscription,
        TaskExecutionEngine,
        TaskManager,
        TaskNotificationService,
        TaskPage,
        TaskQueueManager,
        register_task_type,
    )
    from .runtime import connect, disconnect

#: the names that load on first use, by the module they live in
_LAZY = {
    "ProgressTracker": ".api", "Subscription": ".api", "TaskExecutionEngine": ".api",
    "TaskManager": ".api", "TaskNotificationService": ".api", "TaskPage": ".api",
    "TaskQueueManager": ".api", "register_task_type": ".api",
    "connect": ".runtime", "disconnect": ".runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raytasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "ExecutionError",
    "InvalidParametersError",
    "InvalidTransitionError",
    "NotificationError",
    "PayloadTooLargeError",
    "ProgressTracker",
    "QueueFullError",
    "QueueStats",
    "QueuedTask",
    "QuotaExceededError",
    "RaytasksError",
    "Schedule",
    "ScheduleCreateRequest",
    "ScheduleRule",
    "SchedulingError",
    "Settings",
    "StoreError",
    "Subscription",
    "Task",
    "TaskCancelledError",
    "TaskCreateRequest",
    "TaskError",
    "TaskErrorInfo",
    "TaskExecutionContext",
    "TaskExecutionEngine",
    "TaskFailedError",
    "TaskManager",
    "TaskNotFoundError",
    "TaskNotificationService",
    "TaskPage",
    "TaskPreemptedError",
    "TaskPriority",
    "TaskProgress",
    "TaskProgressNotification",
    "TaskQuery",
    "TaskQueueManager",
    "TaskStatus",
    "TaskStatusNotification",
    "TaskSummary",
    "TaskUpdateRequest",
    "TradingRule",
    "UnknownTaskTypeError",
    "WaitTimeoutError",
    "__version__",
    "connect",
    "disconnect",
    "register_task_type",
]
