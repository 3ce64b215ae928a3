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
from .state import ActiveTasks, Daily, Entry, FinishedCounts
from .waiters import Arrivals

EventSink = Callable[[list[dict[str, Any]]], None]
CancelSink = Callable[[str, str, int], None]
PreemptSink = Callable[[str, str, int, float], None]

#: How many report_and_lease answers are remembered for retried calls, and how many leases
#: they may hold together. A retried call is an executor's latest (each sends one at a
#: time), and a restarted manager rebuilds the answers from the store; by answers alone,
#: 1,024 of up to ``lease_batch_max`` leases each held ~130,000 leases: the manager grew by
#: ~100 MB over 200,000 no-op tasks (``raytasks bench endurance``).
ANSWERS_KEPT = 1024
LEASES_KEPT = 8192


@dataclass
class Parts:
    """The manager's memory of its PENDING and RUNNING tasks, and what changes it."""

    settings: Settings
    store: SqlTaskStore
    clock: Callable[[], float] = time.time
    registry: TaskTypeRegistry = field(default_factory=lambda: TaskTypeRegistry(BUILTIN_TYPES))
    active: ActiveTasks = field(default_factory=ActiveTasks)
    counts: FinishedCounts = field(default_factory=FinishedCounts)
    cpu: Daily = field(default_factory=Daily)  # CPU seconds per owner today
    preempted: Daily = field(default_factory=Daily)  # preemptions per owner today
    run_times: RunTimes = field(default_factory=RunTimes)
    deps: Dependencies = field(default_factory=Dependencies)
    sessions: Sessions = field(default_factory=Sessions)
    arrivals: Arrivals = field(default_factory=Arrivals)
    #: the loans made lately: loan id -> (executor, task type, until when, monotonic)
    loans: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    #: report_and_lease answers by request id (a call Ray retries gets the same leases)
    answers: OrderedDict[str, list[Lease]] = field(default_factory=OrderedDict)
    #: the last layout of each type's waiting tasks the read paths took: (when, starts)
    forecasts: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    #: events committed (the runtime pokes the notifier); a cancel for an executor
    on_events: EventSink | None = None
    on_cancel: CancelSink | None = None
    #: a preemption for an executor: (executor, task, lease token, grace seconds)
    on_preempt: PreemptSink | None = None
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

    def estimate(self, entry: Entry) -> float:
        """``entry``'s predicted run time, from the run times learned so far (predicted
        again only when they have learned since)."""
        if entry.estimate_learned != self.run_times.learned:
            self.predict(entry)
        return entry.estimate_s

    def predict(self, entry: Entry) -> None:
        """Predict ``entry``'s run time from the run times learned so far."""
        said = self.run_times.estimate(entry.task_type, entry.kind, entry.work_units or 1)
        entry.estimate_s, entry.estimate_samples = said.seconds, said.samples
        entry.estimate_learned = self.run_times.learned

    def preemptible(self, task_type: str) -> bool:
        """Whether the scheduler may preempt running tasks of ``task_type`` (its settings
        say, else its registration)."""
        said = self.settings.for_type(task_type).preemptible
        if said is not None:
            return said
        return task_type in self.registry and self.registry.get(task_type).preemptible

    def grace_s(self, task_type: str) -> float:
        """How long a preempted attempt of ``task_type`` has to checkpoint and stop."""
        own = self.settings.task_types.get(task_type)
        if own is not None and own.preempt_grace_s is not None:
            return own.preempt_grace_s
        if task_type in self.registry:
            spec = self.registry.get(task_type)
            if spec.preempt_grace_s is not None:
                return spec.preempt_grace_s
        return self.settings.preempt_grace_s

    def remember(self, request_id: str, leases: list[Lease]) -> None:
        self.answers[request_id] = leases
        held = sum(len(kept) for kept in self.answers.values())
        while len(self.answers) > ANSWERS_KEPT or (held > LEASES_KEPT and len(self.answers) > 1):
            held -= len(self.answers.popitem(last=False)[1])
