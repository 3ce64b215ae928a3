"""The task state machine and retry policy: pure functions, no I/O, ``now`` passed in."""

from __future__ import annotations

import random
from typing import Any

from .errors import InvalidTransitionError
from .models import TaskStatus

P, R, C, F, X = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED,
                 TaskStatus.FAILED, TaskStatus.CANCELLED)

#: The only legal status changes. RUNNING → PENDING is a retry (attempt + 1);
#: FAILED/CANCELLED → PENDING is an explicit ``retry_task``; PENDING → COMPLETED is a hit
#: of the result cache (:mod:`raytasks.cache`: it takes a finished task's result, unrun).
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    P: frozenset({R, C, F, X}),
    R: frozenset({P, C, F, X}),
    C: frozenset(),
    F: frozenset({P}),
    X: frozenset({P}),
}


def check_transition(task_id: str, current: TaskStatus, target: TaskStatus) -> None:
    """Raise :class:`InvalidTransitionError` unless ``current → target`` is legal."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransitionError(task_id, current.value, target.value)


def retry_delay_s(
    attempt: int,
    base_s: float,
    max_s: float,
    jitter: float,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter before retry number ``attempt`` (1-based).

    The delay is ``min(max_s, base_s * 2**(attempt-1))`` scaled down by up to
    ``jitter`` (a fraction), so simultaneous failures do not retry in lockstep.
    """
    source: Any = rng or random
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return delay * (1.0 - jitter * source.random())
