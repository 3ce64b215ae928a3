"""What the manager's components share: its settings, clock, store, memory and pipeline.

Each component (:class:`~raytasks.manager.changes.Changes`,
:class:`~raytasks.manager.adoption.Adoption`,
:class:`~raytasks.manager.schedules.ScheduleRunner`, …) is given this, never the
manager itself: a part reads and changes memory only through what is named here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..handlers import BUILTIN_TYPES
from ..messages import Lease
from ..registry import TaskTypeRegistry
from ..settings import Settings
from ..store import SqlTaskStore
from .deps import Dependencies
from .estimates import RunTimes
from .intake import Intake
from .pipeline import CommitPipeline
from .queues import Queues
from .sessions import Sessions
from .state import ActiveTasks, DailyCpu, FinishedCounts
from .waiters import Arrivals

EventSink = Callable[[list[dict[str, Any]]], None]
CancelSink = Callable[[str, str, int], None]

#: How many report_and_lease answers are remembered for retried calls.
ANSWERS_KEPT = 1024


@dataclass
class Parts:
    """The manager's memory of its PENDING and RUNNING tasks, and what changes it."""

    settings: Settings
    store: SqlTaskStore
    clock: Callable[[], float] = time.time
    registry: TaskTypeRegistry = field(default_factory=lambda: TaskTypeRegistry(BUILTIN_TYPES))
    active: ActiveTasks = field(default_factory=ActiveTasks)
    counts: FinishedCounts = field(default_factory=FinishedCounts)
    cpu: DailyCpu = field(default_factory=DailyCpu)
    run_times: RunTimes = field(default_factory=RunTimes)
    deps: Dependencies = field(default_factory=Dependencies)
    sessions: Sessions = field(default_factory=Sessions)
    arrivals: Arrivals = field(default_factory=Arrivals)
    #: report_and_lease answers by request id (a call Ray retries gets the same leases)
    answers: OrderedDict[str, list[Lease]] = field(default_factory=OrderedDict)
    #: events committed (the runtime pokes the notifier); a cancel for an executor
    on_events: EventSink | None = None
    on_cancel: CancelSink | None = None
    queues: Queues = field(init=False)
    intake: Intake = field(init=False)
    pipeline: CommitPipeline = field(init=False)

    def __post_init__(self) -> None:
        self.queues = Queues(self.settings)
        self.intake = Intake(self.registry, self.settings, self.queues, self.active)

    def publish(self, events: list[dict[str, Any]], ids: list[int]) -> None:
        """Events committed: hand them (with their ids) to the notifier's poke."""
        if not ids or self.on_events is None:
            return
        for event, event_id in zip(events, ids, strict=True):
            event["event_id"] = event_id
        self.on_events(events)

    def remember(self, request_id: str, leases: list[Lease]) -> None:
        self.answers[request_id] = leases
        while len(self.answers) > ANSWERS_KEPT:
            self.answers.popitem(last=False)
