"""Training tasks: ``train`` (scikit-learn pipelines on the features), ``tune`` (parallel
trials across the cluster with successive-halving early stopping), ``ensemble`` (voting or
stacking with a time-ordered hold-out) and ``online`` (incremental ``partial_fit``). Every
model goes to the versioned registry with its metadata and out-of-sample metrics.

``tune`` and ``online`` checkpoint as they go (plain JSON: scores, survivors, the learned
numbers) and a new attempt resumes where the last one stopped, when the checkpoint was
made from the same parameters and data (:func:`work_digest`). ``train`` and ``ensemble``
restart: their state mid-fit is a scikit-learn model, which only a pickle could hold."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import (
    HistGradientBoostingRegressor,
    RandomForestRegressor,
    StackingRegressor,
    VotingRegressor,
)
from sklearn.linear_model import Ridge, SGDRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..context import TaskExecutionContext
from ..quant.learning import Dataset, build_dataset, regression_quality, time_split
from ..resources import Resources
from .params import TrainingParams

if TYPE_CHECKING:
    from ..runtime.fanout import Fanout

#: the kinds of checkpoint (and their format): another kind or format is not resumed
TUNE_CHECKPOINT = "tune/1"
ONLINE_CHECKPOINT = "online/1"


def estimator(kind: str, **hyper: Any) -> Pipeline:
    models: dict[str, Any] = {
        "ridge": lambda: Ridge(alpha=hyper.get("alpha", 10.0)),
        "random_forest": lambda: RandomForestRegressor(
            n_estimators=hyper.get("n_estimators", 100), min_samples_leaf=20, n_jobs=1,
            random_state=0),
        "gbrt": lambda: HistGradientBoostingRegressor(
            max_iter=hyper.get("max_iter", 100), learning_rate=hyper.get("learning_rate", 0.05),
            max_leaf_nodes=hyper.get("max_leaf_nodes", 15),
            l2_regularization=hyper.get("l2_regularization", 0.0), random_state=0),
    }
    return make_pipeline(StandardScaler(), models[kind]())


def dataset(params: TrainingParams, ctx: TaskExecutionContext) -> Dataset:
    ctx.report_progress(0.05, "loading bars", stage="data")
    bars = Resources.of(ctx).load_bars(params.source, params.codes, params.start, params.end,
                                       params.seed)
    ctx.report_progress(0.15, "building features", stage="features")
    return build_dataset(bars, params.horizon, tuple(params.windows))


def train_task(params: TrainingParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """Fit, score out of sample and register a model of ``params.kind``.

    ``tune`` and ``online`` resume from the attempt's checkpoint. ``train`` (one fit) and
    ``ensemble`` restart after a preemption: they stop at their break points (before and
    after each fit, before registering) but keep nothing, as a fitted scikit-learn model
    is not JSON and checkpoints are never pickles.
    """
    data = dataset(params, ctx)
    train, test = time_split(data.x.index, params.test_fraction, gap=params.horizon)
    ctx.check_cancelled()
    if params.kind == "train":
        model: Any = estimator(params.model).fit(data.x[train], data.y[train])
        extra: dict[str, Any] = {}
    elif params.kind == "tune":
        model, extra = tune(params, data, train, ctx)
    elif params.kind == "ensemble":
        model, extra = ensemble(params, data, train, ctx)
    else:
        return online(params, data, train, test, ctx)
    ctx.check_cancelled()
    ctx.report_progress(0.9, "scoring out of sample", stage="score")
    quality = regression_quality(data.y[test], model.predict(data.x[test]),
                                 data.x[test].index.get_level_values("date"))
    return _register(params, model, data, quality, extra, ctx)


def work_digest(params: TrainingParams, data: Dataset) -> str:
    """What a checkpoint is valid for: these parameters, features and labels. A source
    rewritten between attempts, or an ``end`` that defaults to a later day, gives
    another digest, and the work restarts rather than mixing two data sets."""
    digest = hashlib.sha256(params.model_dump_json().encode())
    digest.update("\x1f".join(map(str, data.x.columns)).encode())
    for part in (data.x, data.y):
        digest.update(pd.util.hash_pandas_object(part).to_numpy().tobytes())
    return digest.hexdigest()


def _resumable(ctx: TaskExecutionContext, kind: str, digest: str) -> dict[str, Any] | None:
    """``ctx.checkpoint`` when it is a ``kind`` checkpoint of the same work, else None."""
    state = ctx.checkpoint
    if isinstance(state, dict) and state.get("kind") == kind and state.get("digest") == digest:
        return state
    return None


def _register(params: TrainingParams, model: Any, data: Dataset, quality: dict[str, float],
              extra: dict[str, Any], ctx: TaskExecutionContext) -> dict[str, Any]:
    name = params.name or f"{params.kind}-{params.model}"
    dates = data.x.index.get_level_values("date")
    meta = {"kind": params.kind, "estimator": params.model, "features": list(data.x.columns),
            "windows": params.windows, "horizon": params.horizon, "codes": params.codes,
            "train_range": [str(dates.min().date()), str(dates.max().date())],
            "metrics": quality, **extra}
    ctx.check_cancelled()  # a stopped attempt registers nothing: its rerun will
    model_id = Resources.of(ctx).model_registry(params.registry).save(name, model, meta)
    return {"kind": params.kind, "model_id": model_id, "metrics": quality, **extra}


def tune(params: TrainingParams, data: Dataset, train: np.ndarray,
         ctx: TaskExecutionContext) -> tuple[Any, dict[str, Any]]:
    """Random search over boosted trees; each round trains the surviving trials in parallel
    (Ray tasks) with more iterations and stops the worse half early.

    The trials come from ``params.seed``; the checkpoint holds the rounds done, the
    survivors, the history and the scores of the round under way, saved as each trial
    finishes. A resumed attempt scores only the trials its checkpoint lacks.
    """
    from ..runtime.fanout import Fanout

    rng = np.random.default_rng(params.seed)
    trials = [{"learning_rate": float(10 ** rng.uniform(-2.3, -0.7)),
               "max_leaf_nodes": int(rng.integers(4, 40)),
               "l2_regularization": float(10 ** rng.uniform(-3, 1))} for _ in range(params.trials)]
    x, y = data.x[train], data.y[train]
    fit_part, valid_part = time_split(x.index, 0.25, gap=params.horizon)
    digest = work_digest(params, data)
    state = _resumable(ctx, TUNE_CHECKPOINT, digest) or {
        "kind": TUNE_CHECKPOINT, "digest": digest, "round": 0,
        "survivors": list(range(len(trials))), "history": [], "scores": []}
    if state["round"] or state["scores"]:
        ctx.report_progress(0.2 + 0.6 * state["round"] / params.rounds,
                            f"resuming: {state['round']}/{params.rounds} rounds done",
                            stage="tune")
    score = Fanout(_score_trial, x, y)  # x and y go to Ray's object store once
    while state["round"] < params.rounds:
        state = _tune_round(score, trials, fit_part, valid_part, state, ctx)
        ctx.save_checkpoint(state)
        ctx.check_cancelled()
        ctx.report_progress(0.2 + 0.6 * state["round"] / params.rounds,
                            f"round {state['round']}: {len(state['survivors'])} trials left",
                            stage="tune")
    best = trials[state["survivors"][0]]
    ctx.check_cancelled()
    model = estimator("gbrt", max_iter=20 * 3 ** (params.rounds - 1), **best).fit(x, y)
    return model, {"best_params": best, "rounds": state["history"]}


def _tune_round(score: Fanout[float], trials: list[dict[str, Any]], fit_part: np.ndarray,
                valid_part: np.ndarray, state: dict[str, Any],
                ctx: TaskExecutionContext) -> dict[str, Any]:
    """The round after ``state``: score the survivors not scored yet (each score saved in
    the checkpoint as it comes) and keep the better half; returns the next state."""
    round_no, survivors = state["round"], state["survivors"]
    iters = 20 * 3**round_no
    scored = {int(i): float(rmse) for i, rmse in state["scores"]}
    todo = [i for i in survivors if i not in scored]

    def keep(k: int, rmse: float) -> None:
        scored[todo[k]] = rmse
        ctx.save_checkpoint({**state, "scores": [[i, r] for i, r in scored.items()]})

    score.map([(fit_part, valid_part, trials[i], iters) for i in todo], ctx, on_result=keep)
    ranked = sorted((scored[i], i) for i in survivors)  # ties go to the lower trial
    return {**state, "round": round_no + 1, "scores": [],
            "survivors": [i for _, i in ranked[:max(1, len(ranked) // 2)]],
            "history": [*state["history"], [{"trial": i, "max_iter": iters, "valid_rmse": r}
                                            for r, i in ranked]]}


def _score_trial(x: Any, y: Any, fit_part: np.ndarray, valid_part: np.ndarray,
                 hyper: dict[str, Any], iters: int) -> float:
    model = estimator("gbrt", max_iter=iters, **hyper).fit(x[fit_part], y[fit_part])
    return float(np.sqrt(np.mean((model.predict(x[valid_part]) - y[valid_part]) ** 2)))


def ensemble(params: TrainingParams, data: Dataset, train: np.ndarray,
             ctx: TaskExecutionContext) -> tuple[Any, dict[str, Any]]:
    """Voting averages the members; stacking fits its ridge combiner on a time-ordered
    hold-out (the last quarter of the training dates), never on shuffled folds.

    Stacking stops between its member fits when the attempt is cancelled or preempted;
    voting fits its members in one call. Neither resumes: it restarts (see
    :func:`train_task`)."""
    members = [("ridge", estimator("ridge")), ("forest", estimator("random_forest")),
               ("gbrt", estimator("gbrt"))]
    x, y = data.x[train], data.y[train]
    if params.method == "voting":
        return VotingRegressor(members).fit(x, y), {"method": "voting"}
    fit_part, hold = time_split(x.index, 0.25, gap=params.horizon)
    fitted = []
    for name, member in members:
        ctx.check_cancelled()
        fitted.append((name, clone(member).fit(x[fit_part], y[fit_part])))
    ctx.check_cancelled()
    ctx.report_progress(0.6, "fitting the combiner on the hold-out", stage="ensemble")
    stack = StackingRegressor(fitted, final_estimator=Ridge(alpha=1.0), cv="prefit")
    stack.fit(x[hold], y[hold])
    return stack, {"method": "stacking",
                   "weights": dict(zip([n for n, _ in members],
                                       stack.final_estimator_.coef_.tolist(), strict=True))}


def online(params: TrainingParams, data: Dataset, train: np.ndarray, test: np.ndarray,
           ctx: TaskExecutionContext) -> dict[str, Any]:
    """Stream the training dates in ``chunks`` (oldest first) through ``partial_fit``,
    scoring each update on the next chunk; start from ``model_id`` when given.

    After each chunk the checkpoint holds what the scaler and the learner have learned
    (every fitted attribute, as JSON), the next chunk and the scores so far; a resumed
    attempt restores them and goes on as if never stopped. A registry model whose
    learned state is not plain numbers is not checkpointed (its run restarts).
    """
    if params.model_id:
        model, _ = Resources.of(ctx).model_registry(params.registry).load(params.model_id)
        if not (isinstance(model, Pipeline) and hasattr(model[-1], "partial_fit")):
            raise ValueError(f"model {params.model_id} cannot learn online (no partial_fit)")
    else:
        model = make_pipeline(StandardScaler(), SGDRegressor(
            alpha=1e-3, learning_rate="invscaling", eta0=1e-3, random_state=0))
    scaler, sgd = model[0], model[-1]
    x, y = data.x[train], data.y[train]
    row_dates = x.index.get_level_values("date")
    edges = np.array_split(np.arange(len(row_dates.unique())), params.chunks)
    dates = row_dates.unique().sort_values()
    digest = work_digest(params, data)
    first, scores = 0, []
    resumed = _resumable(ctx, ONLINE_CHECKPOINT, digest)
    if resumed is not None:
        restore_fitted(scaler, resumed["scaler"])
        restore_fitted(sgd, resumed["learner"])
        first, scores = int(resumed["chunk"]), [float(s) for s in resumed["scores"]]
        ctx.report_progress(0.2 + 0.6 * first / len(edges),
                            f"resuming: {first}/{len(edges)} updates done", stage="online")
    for k in range(first, len(edges)):
        mask = np.asarray(row_dates.isin(dates[edges[k]]))
        scaler.partial_fit(x[mask])
        sgd.partial_fit(scaler.transform(x[mask]), y[mask])
        if k + 1 < len(edges):
            nxt = np.asarray(row_dates.isin(dates[edges[k + 1]]))
            pred = sgd.predict(scaler.transform(x[nxt]))
            scores.append(float(np.sqrt(np.mean((pred - y[nxt]) ** 2))))
        learned = fitted_state(scaler), fitted_state(sgd)
        if learned[0] is not None and learned[1] is not None:
            ctx.save_checkpoint({"kind": ONLINE_CHECKPOINT, "digest": digest, "chunk": k + 1,
                                 "scores": list(scores), "scaler": learned[0],
                                 "learner": learned[1]})
        ctx.report_progress(0.2 + 0.6 * (k + 1) / len(edges), f"update {k + 1}", stage="online")
        ctx.check_cancelled()
    quality = regression_quality(data.y[test], model.predict(data.x[test]),
                                 data.x[test].index.get_level_values("date"))
    return _register(params, model, data, quality,
                     {"next_chunk_rmse": scores, "updated_from": params.model_id}, ctx)


def fitted_state(step: Any) -> dict[str, Any] | None:
    """What fitting taught ``step`` (its attributes beyond the constructor's parameters),
    as JSON that :func:`restore_fitted` turns back into the same values; None when one
    of them is not a finite number, a text, or an array of them."""
    given = step.get_params(deep=False)
    state = {}
    for name, value in vars(step).items():
        if name not in given:
            encoded = _encode(value)
            if encoded is None:
                return None
            state[name] = encoded
    return state


def restore_fitted(step: Any, state: dict[str, Any]) -> None:
    """Give ``step`` back the attributes :func:`fitted_state` took from it."""
    for name, encoded in state.items():
        setattr(step, name, _decode(encoded))


def _encode(value: Any) -> dict[str, Any] | None:
    """``value`` tagged with its type, exactly (None when it cannot be: see
    :func:`fitted_state`); JSON keeps every finite float's bits."""
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype.kind == "O" and all(isinstance(v, str) for v in array.flat):
            dtype = "object"
        elif array.dtype.kind in "biuf" and (array.dtype.kind != "f" or
                                              bool(np.isfinite(array).all())):
            dtype = array.dtype.str
        else:
            return None
        key = "array" if isinstance(value, np.ndarray) else "scalar"
        return {key: array.tolist(), "dtype": dtype, "shape": list(array.shape)}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": value}
    return None


def _decode(encoded: dict[str, Any]) -> Any:
    if "value" in encoded:
        return encoded["value"]
    dtype = object if encoded["dtype"] == "object" else np.dtype(encoded["dtype"])
    if "scalar" in encoded:
        return np.asarray(encoded["scalar"], dtype=dtype)[()]
    return np.asarray(encoded["array"], dtype=dtype).reshape(encoded["shape"])
