"""Built-in handlers resume from their checkpoints: an attempt preempted part way leaves a
checkpoint, the next attempt starts from it, does only the work it lacks, and ends with the
result of an attempt never stopped.

Handlers run directly with a real :class:`TaskExecutionContext` on synthetic bars (Ray is
not up, so ``Fanout`` runs its calls here), except the last test, which fans out on the
session's Ray cluster. Every checkpoint goes through the store's JSON encoder on its way,
as it does in raytasks, and the next attempt gets what came back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from raytasks.context import TaskExecutionContext
from raytasks.errors import TaskPreemptedError
from raytasks.handlers import training
from raytasks.handlers.backtests import backtest
from raytasks.handlers.params import BacktestParams, TrainingParams
from raytasks.quant import backtest as bt
from raytasks.resources import Resources
from raytasks.runtime import fanout
from raytasks.settings import Settings
from raytasks.store.base import to_json

#: three stocks over two years: each fit takes a fraction of a second
TRAINING = {"codes": ["000001.SZ", "600000.SH", "300750.SZ"], "start": "2022-01-01",
            "end": "2023-12-31", "windows": [5, 20]}
OPTIMIZE = {"kind": "optimize", "stock_code": "300750.SZ", "start": "2020-01-01",
            "end": "2023-12-31", "chunks": 4, "fast_values": list(range(2, 20, 3)),
            "slow_values": list(range(10, 70, 10))}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The fits are small: one thread each, or OpenMP's threads spin against whatever
    else the machine runs (a tune took 60 s instead of 7 with two busy cores)."""
    with threadpool_limits(1):
        yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@dataclass
class Attempt:
    """One attempt of a handler: what it saved, said and returned, or that it was preempted."""

    checkpoints: list[Any] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    preempted: bool = False


def attempt(handler: Callable[[Any, TaskExecutionContext], dict[str, Any]], params: Any,
            settings: Settings, checkpoint: Any = None,
            preempt_after: int | None = None, task_type: str = "training",
            cache_dir: Path | None = None) -> Attempt:
    """Run ``handler`` as attempt 1 (from nothing) or 2 (from ``checkpoint``), preempted
    when it has saved ``preempt_after`` checkpoints; ``cache_dir``: the task's cache
    (None: it takes no cached results)."""
    run, preempt = Attempt(), threading.Event()

    def saved(state: Any) -> None:
        run.checkpoints.append(json.loads(to_json(state)))  # what the store gives back
        if len(run.checkpoints) == preempt_after:
            preempt.set()

    ctx = TaskExecutionContext(
        "t1", task_type, 1 if checkpoint is None else 2, params.model_dump(),
        checkpoint=checkpoint, settings=settings, preempt_event=preempt,
        artifact_dir=settings.data_dir / "a", cache_dir=cache_dir,
        on_checkpoint=saved, on_progress=lambda _f, message, _s: run.messages.append(message))
    try:
        run.result = handler(params, ctx)
    except TaskPreemptedError:
        run.preempted = True
    return run


def without_model_id(result: dict[str, Any] | None) -> dict[str, Any]:
    """A training result less its model id (each run registers a new version)."""
    assert result is not None
    return {k: v for k, v in result.items() if k != "model_id"}


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fan-outs run their calls in this process (where they can be counted), even when
    an earlier test of the session started Ray."""
    monkeypatch.setattr(fanout.ray, "is_initialized", lambda: False)


@pytest.fixture
def scored(monkeypatch: pytest.MonkeyPatch, in_process: None) -> list[tuple[int, float]]:
    """The (iterations, learning rate) of every tune trial scored, in order."""
    calls: list[tuple[int, float]] = []
    score = training._score_trial

    def counted(x: Any, y: Any, fit_part: np.ndarray, valid_part: np.ndarray,
                hyper: dict[str, Any], iters: int) -> float:
        calls.append((iters, hyper["learning_rate"]))
        return score(x, y, fit_part, valid_part, hyper, iters)

    monkeypatch.setattr(training, "_score_trial", counted)
    return calls


@pytest.mark.parametrize("preempt_after,where", [(5, "between rounds"), (6, "in round 2")])
def test_tune_resumes_at_its_round_and_skips_the_trials_scored(
        settings: Settings, scored: list[tuple[int, float]], preempt_after: int,
        where: str) -> None:
    # Given a tune of 4 trials in 2 rounds (checkpoints: a score each, then the round, so
    # 4 + 1 in round 1 and 2 + 1 in round 2), and the result of a run never stopped
    params = TrainingParams(kind="tune", trials=4, rounds=2, **TRAINING)
    whole = attempt(training.train_task, params, settings)
    assert len(whole.checkpoints) == 8
    round_1, round_2 = scored[:4], scored[4:]
    assert {i for i, _ in round_1} == {20} and {i for i, _ in round_2} == {60}
    scored.clear()
    # When an attempt is preempted after its preempt_after-th checkpoint
    first = attempt(training.train_task, params, settings, preempt_after=preempt_after)
    assert first.preempted and first.result is None, where
    before = list(scored)
    scored.clear()
    # and the next attempt starts from the last checkpoint
    last = first.checkpoints[-1]
    second = attempt(training.train_task, params, settings, checkpoint=last)
    # Then it scored only the round-2 trials the checkpoint had no score of
    assert before[:4] == round_1 and len(before) == preempt_after - 1
    assert len(scored) == 2 - len(last["scores"])
    assert sorted(before[4:] + scored) == sorted(round_2)
    assert "resuming: 1/2 rounds done" in second.messages
    # and its result is the uninterrupted one: the same history, best trial and metrics
    assert without_model_id(second.result) == without_model_id(whole.result)


def test_tune_ignores_a_checkpoint_of_other_parameters(
        settings: Settings, scored: list[tuple[int, float]]) -> None:
    # Given the checkpoint of a tune preempted after its first round
    params = TrainingParams(kind="tune", trials=4, rounds=2, **TRAINING)
    first = attempt(training.train_task, params, settings, preempt_after=5)
    assert first.preempted and first.checkpoints[-1]["round"] == 1
    scored.clear()
    # When a tune of another seed (other trials) is given it
    other = params.model_copy(update={"seed": 8})
    run = attempt(training.train_task, other, settings, checkpoint=first.checkpoints[-1])
    # Then it starts from the first round: its digest differs
    assert run.result is not None and len(scored) == 6
    assert run.checkpoints[0]["digest"] != first.checkpoints[-1]["digest"]


def online_coefficients(settings: Settings, result: dict[str, Any] | None) -> dict[str, Any]:
    """The registered online model's scaler and learner, as arrays."""
    assert result is not None
    model, _ = Resources(settings.resources).model_registry("models").load(result["model_id"])
    scaler, sgd = model[0], model[-1]
    return {"mean": scaler.mean_, "var": scaler.var_, "coef": sgd.coef_,
            "intercept": sgd.intercept_, "t": sgd.t_}


def test_online_resumes_after_its_last_chunk_with_the_same_model(settings: Settings) -> None:
    # Given an online fit of 5 chunks, and the model of a run never stopped
    params = TrainingParams(kind="online", chunks=5, name="o", **TRAINING)
    whole = attempt(training.train_task, params, settings)
    assert [c["chunk"] for c in whole.checkpoints] == [1, 2, 3, 4, 5]
    # When an attempt is preempted after its second chunk
    first = attempt(training.train_task, params, settings, preempt_after=2)
    assert first.preempted and [m for m in first.messages if m.startswith("update")] == \
        ["update 1", "update 2"]
    # and the next attempt starts from its checkpoint
    second = attempt(training.train_task, params, settings, checkpoint=first.checkpoints[-1])
    # Then it fitted chunks 3 to 5 only
    assert [m for m in second.messages if m.startswith("update")] == \
        ["update 3", "update 4", "update 5"]
    assert "resuming: 2/5 updates done" in second.messages
    # and its scores, metrics and model are the uninterrupted run's
    assert without_model_id(second.result) == without_model_id(whole.result)
    resumed, expected = (online_coefficients(settings, r.result) for r in (second, whole))
    assert resumed["t"] == expected["t"]
    for name in ("mean", "var", "coef", "intercept"):
        np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-12, atol=0,
                                   err_msg=name)


def test_online_restarts_from_a_checkpoint_of_other_work(settings: Settings) -> None:
    # Given the checkpoint of an online fit preempted after a chunk
    params = TrainingParams(kind="online", chunks=3, **TRAINING)
    first = attempt(training.train_task, params, settings, preempt_after=1)
    assert first.preempted
    # When it claims to be of other data, or of another kind
    for changed in ({"digest": "0" * 64}, {"kind": training.TUNE_CHECKPOINT}):
        run = attempt(training.train_task, params, settings,
                      checkpoint={**first.checkpoints[-1], **changed})
        # Then the next attempt fits every chunk again
        assert [m for m in run.messages if m.startswith("update")] == \
            ["update 1", "update 2", "update 3"], changed


def test_learned_state_round_trips_through_json_exactly() -> None:
    # Given a scaler and a learner fitted on a few rows, one averaging its weights
    from sklearn.linear_model import SGDRegressor
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    steps = [StandardScaler().partial_fit(x), SGDRegressor(average=5, random_state=0)]
    steps[1].partial_fit(x, y)
    for step in steps:
        # When its state goes through JSON into a fresh step of the same parameters
        state = json.loads(to_json(training.fitted_state(step)))
        fresh = type(step)(**step.get_params())
        training.restore_fitted(fresh, state)
        # Then every learned attribute is back, of the same type, bit for bit
        for name, value in vars(step).items():
            back = getattr(fresh, name)
            assert type(back) is type(value), name
            np.testing.assert_array_equal(back, value, err_msg=name)
    # and both go on learning as the originals do
    more = rng.normal(size=(40, 3))
    np.testing.assert_array_equal(fresh.partial_fit(more, y).coef_,
                                  steps[1].partial_fit(more, y).coef_)


def test_a_state_that_is_not_plain_numbers_is_not_checkpointed() -> None:
    # Given a fitted step holding a non-finite number, and one holding an object
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.eye(3))
    scaler.var_ = np.array([np.nan, 1.0, 1.0])
    odd = StandardScaler().fit(np.eye(3))
    odd.extra_ = object()
    # When their state is taken, Then there is none (the store's JSON refuses both)
    assert training.fitted_state(scaler) is None and training.fitted_state(odd) is None


@pytest.fixture
def swept(monkeypatch: pytest.MonkeyPatch, in_process: None) -> list[list[tuple[int, int]]]:
    """The pairs of every piece swept in this process, in order."""
    pieces: list[list[tuple[int, int]]] = []
    sweep = bt.sweep_sma

    def counted(market: bt.Market, pairs: list[tuple[int, int]], *args: Any) -> Any:
        pieces.append(list(pairs))
        return sweep(market, pairs, *args)

    monkeypatch.setattr(bt, "sweep_sma", counted)
    return pieces


def test_optimize_resumes_with_the_pieces_it_lacks(
        settings: Settings, swept: list[list[tuple[int, int]]]) -> None:
    # Given a sweep in 4 pieces, and the result of a run never stopped
    params = BacktestParams(**OPTIMIZE)
    whole = attempt(backtest, params, settings)
    assert len(swept) == 4 and len(whole.checkpoints) == 4
    pieces = list(swept)
    swept.clear()
    # When an attempt is preempted after its second piece
    first = attempt(backtest, params, settings, preempt_after=2)
    assert first.preempted and swept == pieces[:2]
    assert [i for i, _ in first.checkpoints[-1]["pieces"]] == [0, 1]
    swept.clear()
    # and the next attempt starts from its checkpoint
    second = attempt(backtest, params, settings, checkpoint=first.checkpoints[-1])
    # Then it swept the other two pieces only, counting progress from the two done
    assert swept == pieces[2:]
    assert "resuming: 2/4 pieces done" in second.messages
    # and its result is the uninterrupted one, every pair's row alike
    assert second.result == whole.result
    assert second.checkpoints[-1] == whole.checkpoints[-1]


def test_optimize_ignores_a_checkpoint_of_other_bars(
        settings: Settings, swept: list[list[tuple[int, int]]]) -> None:
    # Given the checkpoint of a sweep preempted after a piece
    params = BacktestParams(**OPTIMIZE)
    first = attempt(backtest, params, settings, preempt_after=1)
    swept.clear()
    # When a sweep of other bars (another seed of the synthetic source) is given it
    other = params.model_copy(update={"seed": 8})
    run = attempt(backtest, other, settings, checkpoint=first.checkpoints[-1])
    # Then it sweeps all four pieces
    assert run.result is not None and len(swept) == 4


def test_train_stops_after_its_fit_and_registers_nothing(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a train attempt preempted while it fits
    preempt, made = threading.Event(), []
    make = training.estimator

    def preempting(kind: str, **hyper: Any) -> Any:
        made.append(kind)
        preempt.set()
        return make(kind, **hyper)

    monkeypatch.setattr(training, "estimator", preempting)
    ctx = TaskExecutionContext("t1", "training", 1, {}, settings=settings,
                               preempt_event=preempt)
    # When the handler runs, Then it stops once the fit is done, before scoring
    with pytest.raises(TaskPreemptedError):
        training.train_task(TrainingParams(kind="train", **TRAINING), ctx)
    # and leaves no checkpoint and no model: the next attempt fits again
    assert made == ["ridge"] and ctx.checkpoint is None
    assert not list(settings.data_dir.rglob("meta.json"))


def test_stacking_stops_between_its_member_fits(settings: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stacking attempt preempted while it fits its first member
    preempt, members = threading.Event(), []
    copy = training.clone

    def preempting(member: Any) -> Any:
        members.append(member[-1])
        preempt.set()
        return copy(member)

    monkeypatch.setattr(training, "clone", preempting)
    ctx = TaskExecutionContext("t1", "training", 1, {}, settings=settings,
                               preempt_event=preempt)
    # When the handler runs, Then it stops before fitting the second (the forest)
    with pytest.raises(TaskPreemptedError):
        training.train_task(TrainingParams(kind="ensemble", method="stacking", **TRAINING),
                            ctx)
    assert [type(m).__name__ for m in members] == ["Ridge"] and ctx.checkpoint is None


def test_optimize_on_ray_resumes_with_the_pieces_it_lacks(ray_cluster: None,
                                                          settings: Settings) -> None:
    # Given a sweep whose 4 pieces run as Ray tasks, and its result never stopped
    params = BacktestParams(**OPTIMIZE)
    whole = attempt(backtest, params, settings)
    # When an attempt is preempted at its first finished piece (the others are cancelled)
    first = attempt(backtest, params, settings, preempt_after=1)
    assert first.preempted
    kept = {i for i, _ in first.checkpoints[-1]["pieces"]}
    # and the next attempt starts from its checkpoint
    second = attempt(backtest, params, settings, checkpoint=first.checkpoints[-1])
    # Then the pieces it adds to the checkpoint are those the first lacked
    added = [{i for i, _ in c["pieces"]} - kept for c in second.checkpoints]
    assert added[-1] == {0, 1, 2, 3} - kept and len(second.checkpoints) == 4 - len(kept)
    # and its result is the uninterrupted one
    assert second.result == whole.result
