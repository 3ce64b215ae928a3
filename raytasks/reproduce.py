"""Re-run and verify: does a task give its result again on the same inputs?

A re-run is a new task with the original's type, parameters, priority, queue and owner.
When it finishes, :func:`verify` compares the two results field by field: numbers within
the type's ``tolerance`` (relative, and absolute near zero; 0 for exactly, as the backtest
engine declares), everything else exactly, but the fields the type declares ``volatile``
(a training's new model version id). It names every difference by its path in the result,
and which fingerprints of the lineage changed between the runs (:func:`raytasks.lineage.changed`:
the code, a library, the bars read, a model loaded), so a difference says whether an
input moved or the computation is not deterministic.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from .lineage import changed
from .models import Task, TaskCreateRequest, TaskStatus, TaskTypeInfo

#: Differences listed at most (a result of thousands of numbers may differ everywhere).
MOST_DIFFERENCES = 50


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()  # a field one result has and the other has not


class Verdict(BaseModel):
    """How a re-run compares with its original."""

    original: str
    rerun: str
    reproduced: bool
    tolerance: float
    #: each field that differs: "<path>: <original> != <re-run>"
    differences: list[str] = Field(default_factory=list)
    #: the lineage fingerprints that differ between the two runs (inputs that moved)
    changed: list[str] = Field(default_factory=list)

    def text(self) -> str:
        if self.reproduced:
            return f"reproduced: {self.rerun} gives {self.original}'s result " \
                   f"(tolerance {self.tolerance:g})"
        lines = [f"not reproduced: {self.rerun} differs from {self.original}"]
        lines += [f"  {d}" for d in self.differences]
        lines.append("  inputs changed: " + (", ".join(self.changed) if self.changed else
                                             "none (the computation is not deterministic)"))
        return "\n".join(lines)


def rerun_request(task: Task) -> TaskCreateRequest:
    """A new task on ``task``'s inputs: same type, parameters (after their defaults, as
    its lineage recorded them: a default such as "through the last trading day" is not
    taken again), priority, queue and owner; never served from the result cache."""
    require_completed(task)
    return TaskCreateRequest(
        name=task.name, task_type=task.task_type,
        parameters=(task.lineage or {}).get("parameters") or task.parameters,
        priority=task.priority, queue=task.queue, timeout_s=task.timeout_s,
        max_retries=task.max_retries, owner=task.owner, cache=False)


def require_completed(task: Task) -> None:
    """Raises InvalidTransitionError (409) unless ``task`` completed: only a result can be
    re-run and verified."""
    if task.status is not TaskStatus.COMPLETED:
        from .errors import InvalidTransitionError

        raise InvalidTransitionError(task.id, task.status.value, "verified by a re-run (only "
                                     "a COMPLETED task can)")


def verify(original: Task, rerun: Task, info: TaskTypeInfo | None) -> Verdict:
    """Compare a finished re-run with its original (``info``: the type's tolerance)."""
    tolerance = info.tolerance if info is not None else 0.0
    volatile = set(info.volatile) if info is not None else set()
    if rerun.status is not TaskStatus.COMPLETED:
        reason = rerun.error.message if rerun.error else rerun.status.value
        differences = [f"status: COMPLETED != {rerun.status.value} ({reason})"]
    else:
        differences = compare(original.result, rerun.result, tolerance, volatile)
    return Verdict(original=original.id, rerun=rerun.id, reproduced=not differences,
                   tolerance=tolerance, differences=differences[:MOST_DIFFERENCES],
                   changed=changed(original.lineage, rerun.lineage))


def compare(before: Any, after: Any, tolerance: float = 0.0,
            volatile: set[str] | frozenset[str] = frozenset(), path: str = "result"
            ) -> list[str]:
    """Where ``after`` differs from ``before`` (JSON values), as "<path>: a != b"."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            if key in volatile and path == "result":
                continue
            if key not in before or key not in after:
                mine, theirs = before.get(key, ABSENT), after.get(key, ABSENT)
                out.append(f"{path}.{key}: {mine!r} != {theirs!r}")
                continue
            out += compare(before[key], after[key], tolerance, volatile, f"{path}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: {len(before)} items != {len(after)} items"]
        out = []
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            out += compare(a, b, tolerance, volatile, f"{path}[{i}]")
        return out
    if isinstance(before, bool) or isinstance(after, bool):  # True == 1 in Python
        same = type(before) is type(after) and before == after
        return [] if same else [f"{path}: {before!r} != {after!r}"]
    if _number(before) and _number(after):
        if before == after or (math.isnan(before) and math.isnan(after)):
            return []
        if tolerance and math.isclose(before, after, rel_tol=tolerance, abs_tol=tolerance):
            return []
        return [f"{path}: {before!r} != {after!r}"]
    return [] if before == after else [f"{path}: {before!r} != {after!r}"]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
