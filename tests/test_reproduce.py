"""Comparing a re-run's result with its original's (no Ray): tolerance, volatile fields,
shapes, and the lineage fingerprints that moved."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from raytasks.errors import InvalidTransitionError
from raytasks.models import Task, TaskPriority, TaskStatus, TaskTypeInfo
from raytasks.reproduce import compare, rerun_request, verify


def _task(task_id: str, result: object, status: TaskStatus = TaskStatus.COMPLETED,
          lineage: dict[str, object] | None = None) -> Task:
    now = datetime.now(tz=UTC)
    return Task(id=task_id, name="t", task_type="backtest", status=status,
                priority=TaskPriority.MEDIUM, parameters={"days": 5}, result=result,
                created_at=now, updated_at=now, lineage=lineage)


def test_numbers_are_equal_exactly_or_within_the_tolerance_given() -> None:
    before = {"sharpe": 1.25, "curve": [1.0, 1.01, 0.99], "n": 3, "name": "sma"}
    assert compare(before, dict(before)) == []
    moved = {**before, "sharpe": 1.25 + 1e-12}
    assert compare(before, moved) == [f"result.sharpe: 1.25 != {1.25 + 1e-12!r}"]
    assert compare(before, moved, tolerance=1e-9) == []
    assert compare(before, {**before, "curve": [1.0, 1.02, 0.99]}, tolerance=1e-9) == \
        ["result.curve[1]: 1.01 != 1.02"]
    assert compare(before, {**before, "curve": [1.0]}) == ["result.curve: 3 items != 1 items"]
    assert compare(before, {**before, "name": "momentum"}) == \
        ["result.name: 'sma' != 'momentum'"]
    assert compare({"a": 1}, {"b": 1}) == ["result.a: 1 != absent", "result.b: absent != 1"]
    assert compare({"x": float("nan")}, {"x": float("nan")}) == []
    assert compare({"flag": True}, {"flag": 1}) == ["result.flag: True != 1"]


def test_volatile_fields_are_skipped_at_the_top_only() -> None:
    before = {"model_id": "m:v1", "metrics": {"model_id": "x"}}
    after = {"model_id": "m:v2", "metrics": {"model_id": "y"}}
    assert compare(before, after, volatile={"model_id"}) == \
        ["result.metrics.model_id: 'x' != 'y'"]


def test_a_verdict_names_differences_and_the_inputs_that_moved() -> None:
    info = TaskTypeInfo(name="backtest", timeout_s=None, max_retries=0, max_concurrency=None,
                        builtin=True, placeholder=False)
    lineage = {"code": "a", "bars": {"s/1": {"sha256": "x"}}, "models": {
        "m/a:v1": {"sha256": "1", "role": "loaded"}, "m/b:v1": {"sha256": "2", "role": "saved"}}}
    moved = {"code": "a", "bars": {"s/1": {"sha256": "y"}}, "models": {
        "m/a:v1": {"sha256": "1", "role": "loaded"}, "m/b:v2": {"sha256": "3", "role": "saved"}}}
    same = verify(_task("o", {"pnl": 1.0}, lineage=lineage),
                  _task("r", {"pnl": 1.0}, lineage=lineage), info)
    assert same.reproduced and same.changed == [] and "reproduced" in same.text()
    other = verify(_task("o", {"pnl": 1.0}, lineage=lineage),
                   _task("r", {"pnl": 2.0}, lineage=moved), info)
    assert not other.reproduced and other.differences == ["result.pnl: 1.0 != 2.0"]
    assert other.changed == ["bars.s/1"]  # a model saved is an output, not an input
    failed = verify(_task("o", {"pnl": 1.0}), _task("r", None, TaskStatus.FAILED), info)
    assert not failed.reproduced and failed.differences[0].startswith("status: COMPLETED")


def test_only_a_completed_task_is_rerun_and_on_its_parameters_after_defaults() -> None:
    with pytest.raises(InvalidTransitionError, match="only a COMPLETED task"):
        rerun_request(_task("f", None, TaskStatus.FAILED))
    done = _task("d", {}, lineage={"parameters": {"days": 5, "end": "2026-12-04"}})
    assert rerun_request(done).parameters == {"days": 5, "end": "2026-12-04"}
    assert rerun_request(_task("d", {})).parameters == {"days": 5}


def test_a_lineage_row_keeps_its_own_part_and_names_its_environment() -> None:
    import hashlib
    import json

    from raytasks.lineage import Lineage, environment, own, whole
    from raytasks.registry import TaskTypeSpec

    lineage = Lineage.start(TaskTypeSpec("noop", lambda p, c: None), {"seed": 7})
    stored = json.loads(lineage.text())
    digest, text = lineage.environment()
    # the row: the task's own part and its environment's digest, nothing of the install
    assert set(stored) == {"environment", "parameters", "seeds", "bars", "models"}
    assert stored["environment"] == digest == hashlib.sha256(text.encode()).hexdigest()
    assert stored["seeds"] == {"seed": 7}
    # put back together, it is the lineage the attempt recorded
    back = whole(stored, {digest: json.loads(text)})
    assert back == {**lineage, "environment": digest} and own(back) == stored
    # another version or code is another environment; an unknown one stays as stored
    assert environment("9.9", lineage["code"])[0] != digest
    assert whole(stored, {}) == stored
