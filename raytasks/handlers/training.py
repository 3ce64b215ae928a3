"""Training tasks: ``train`` (scikit-learn pipelines on the features), ``tune`` (parallel
trials across the cluster with successive-halving early stopping), ``ensemble`` (voting or
stacking with a time-ordered hold-out) and ``online`` (incremental ``partial_fit``). Every
model goes to the versioned registry with its metadata and out-of-sample metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
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
    ctx.report_progress(0.9, "scoring out of sample", stage="score")
    quality = regression_quality(data.y[test], model.predict(data.x[test]),
                                 data.x[test].index.get_level_values("date"))
    return _register(params, model, data, quality, extra, ctx)


def _register(params: TrainingParams, model: Any, data: Dataset, quality: dict[str, float],
              extra: dict[str, Any], ctx: TaskExecutionContext) -> dict[str, Any]:
    name = params.name or f"{params.kind}-{params.model}"
    dates = data.x.index.get_level_values("date")
    meta = {"kind": params.kind, "estimator": params.model, "features": list(data.x.columns),
            "windows": params.windows, "horizon": params.horizon, "codes": params.codes,
            "train_range": [str(dates.min().date()), str(dates.max().date())],
            "metrics": quality, **extra}
    model_id = Resources.of(ctx).model_registry(params.registry).save(name, model, meta)
    return {"kind": params.kind, "model_id": model_id, "metrics": quality, **extra}


def tune(params: TrainingParams, data: Dataset, train: np.ndarray,
         ctx: TaskExecutionContext) -> tuple[Any, dict[str, Any]]:
    """Random search over boosted trees; each round trains the surviving trials in parallel
    (Ray tasks) with more iterations and stops the worse half early."""
    from ..runtime.fanout import Fanout

    rng = np.random.default_rng(params.seed)
    trials = [{"learning_rate": float(10 ** rng.uniform(-2.3, -0.7)),
               "max_leaf_nodes": int(rng.integers(4, 40)),
               "l2_regularization": float(10 ** rng.uniform(-3, 1))} for _ in range(params.trials)]
    x, y = data.x[train], data.y[train]
    fit_part, valid_part = time_split(x.index, 0.25, gap=params.horizon)
    score = Fanout(_score_trial, x, y)  # x and y go to Ray's object store once
    history = []
    survivors = list(range(len(trials)))
    for round_no in range(params.rounds):
        iters = 20 * 3**round_no
        results = score.map([(fit_part, valid_part, trials[i], iters) for i in survivors])
        ranked = sorted(zip(results, survivors, strict=True))
        history.append([{"trial": i, "max_iter": iters, "valid_rmse": r} for r, i in ranked])
        survivors = [i for _, i in ranked[:max(1, len(ranked) // 2)]]
        ctx.check_cancelled()
        ctx.report_progress(0.2 + 0.6 * (round_no + 1) / params.rounds,
                            f"round {round_no + 1}: {len(survivors)} trials left", stage="tune")
    best = trials[survivors[0]]
    model = estimator("gbrt", max_iter=20 * 3 ** (params.rounds - 1), **best).fit(x, y)
    return model, {"best_params": best, "rounds": history}


def _score_trial(x: Any, y: Any, fit_part: np.ndarray, valid_part: np.ndarray,
                 hyper: dict[str, Any], iters: int) -> float:
    model = estimator("gbrt", max_iter=iters, **hyper).fit(x[fit_part], y[fit_part])
    return float(np.sqrt(np.mean((model.predict(x[valid_part]) - y[valid_part]) ** 2)))


def ensemble(params: TrainingParams, data: Dataset, train: np.ndarray,
             ctx: TaskExecutionContext) -> tuple[Any, dict[str, Any]]:
    """Voting averages the members; stacking fits its ridge combiner on a time-ordered
    hold-out (the last quarter of the training dates), never on shuffled folds."""
    members = [("ridge", estimator("ridge")), ("forest", estimator("random_forest")),
               ("gbrt", estimator("gbrt"))]
    x, y = data.x[train], data.y[train]
    if params.method == "voting":
        return VotingRegressor(members).fit(x, y), {"method": "voting"}
    fit_part, hold = time_split(x.index, 0.25, gap=params.horizon)
    fitted = [(n, clone(m).fit(x[fit_part], y[fit_part])) for n, m in members]
    ctx.report_progress(0.6, "fitting the combiner on the hold-out", stage="ensemble")
    stack = StackingRegressor(fitted, final_estimator=Ridge(alpha=1.0), cv="prefit")
    stack.fit(x[hold], y[hold])
    return stack, {"method": "stacking",
                   "weights": dict(zip([n for n, _ in members],
                                       stack.final_estimator_.coef_.tolist(), strict=True))}


def online(params: TrainingParams, data: Dataset, train: np.ndarray, test: np.ndarray,
           ctx: TaskExecutionContext) -> dict[str, Any]:
    """Stream the training dates in ``chunks`` (oldest first) through ``partial_fit``,
    scoring each update on the next chunk; start from ``model_id`` when given."""
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
    scores = []
    for k, block in enumerate(edges):
        mask = np.asarray(row_dates.isin(dates[block]))
        scaler.partial_fit(x[mask])
        sgd.partial_fit(scaler.transform(x[mask]), y[mask])
        if k + 1 < len(edges):
            nxt = np.asarray(row_dates.isin(dates[edges[k + 1]]))
            pred = sgd.predict(scaler.transform(x[nxt]))
            scores.append(float(np.sqrt(np.mean((pred - y[nxt]) ** 2))))
        ctx.report_progress(0.2 + 0.6 * (k + 1) / len(edges), f"update {k + 1}", stage="online")
    quality = regression_quality(data.y[test], model.predict(data.x[test]),
                                 data.x[test].index.get_level_values("date"))
    return _register(params, model, data, quality,
                     {"next_chunk_rmse": scores, "updated_from": params.model_id}, ctx)
