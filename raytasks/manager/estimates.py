"""Run times predicted from history, each with its own measured error.

Per task type and kind (``parameters["kind"]`` of the built-in families), the run time of a
finished attempt is taken as proportional to the work its parameters declare
(``work_units``): the estimate is the median seconds per unit of the latest attempts, times
the task's units. Before each finished attempt teaches it, the estimate it would have given
is compared with the actual run time: the median absolute percentage error of those
comparisons is the estimate's measured error, reported beside it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

#: Finished attempts remembered per (type, kind): the estimate follows recent behaviour.
KEPT = 64
#: Errors remembered per (type, kind), for the measured error.
ERRORS_KEPT = 256


@dataclass(frozen=True)
class Estimate:
    """A predicted run time (seconds) and what it is worth."""

    seconds: float
    #: median absolute percentage error of this key's past predictions (None: none yet)
    error: float | None
    #: finished attempts it was learned from (0: a guess, the type's default)
    samples: int


class RunTimes:
    """Predicted run times by (task type, kind), learned from finished attempts."""

    def __init__(self, default_s: float = 1.0) -> None:
        self.default_s = default_s
        self._rates: dict[tuple[str, str | None], deque[float]] = {}
        self._errors: dict[tuple[str, str | None], deque[float]] = {}
        self.learned = 0  # finished runs learned from: a prediction older than this is stale

    def estimate(self, task_type: str, kind: str | None, units: int) -> Estimate:
        """The run time of a task of ``units`` work units."""
        key = (task_type, kind)
        rates = self._rates.get(key) or self._rates.get((task_type, None))
        if not rates:
            return Estimate(self.default_s, None, 0)
        errors = self._errors.get(key)
        return Estimate(statistics.median(rates) * max(1, units),
                        statistics.median(errors) if errors else None, len(rates))

    def learn(self, task_type: str, kind: str | None, units: int, seconds: float) -> None:
        """A finished attempt of ``units`` took ``seconds``; measure the error it would
        have had, then learn from it."""
        if seconds <= 0:
            return
        key = (task_type, kind)
        if key in self._rates:
            predicted = self.estimate(task_type, kind, units).seconds
            self._errors.setdefault(key, deque(maxlen=ERRORS_KEPT)).append(
                abs(predicted - seconds) / seconds)
        self.learned += 1
        rate = seconds / max(1, units)
        for k in {key, (task_type, None)}:  # the type's own, for kinds not seen yet
            self._rates.setdefault(k, deque(maxlen=KEPT)).append(rate)

    def errors(self) -> dict[tuple[str, str | None], tuple[float, int]]:
        """Per (type, kind): the median absolute percentage error and how many were measured."""
        return {k: (statistics.median(v), len(v)) for k, v in self._errors.items() if v}
