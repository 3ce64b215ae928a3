"""Prediction tasks: ``price`` (N-day-ahead), ``volatility`` (EWMA, GARCH, HAR-RV),
``trend`` (direction with a probability) and ``batch`` (many stocks fanned out across the
cluster). Every forecast comes with its out-of-sample quality against a naive baseline,
from a time-ordered split with a gap of the horizon (no look-ahead)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..context import TaskExecutionContext
from ..quant.corporate import adjusted_close
from ..quant.learning import build_dataset, regression_quality, time_split
from ..quant.risk import DAYS
from ..quant.volatility import ewma_variance, fit_garch, fit_har, har_design, qlike
from ..resources import Resources
from .params import PredictionParams


def predict(params: PredictionParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    if params.kind == "volatility":
        return volatility(params, ctx)
    if params.kind == "batch":
        return batch(params, ctx)
    return price_or_trend(params, params.stock_code, Resources.of(ctx), ctx)


def price_or_trend(params: PredictionParams, code: str, resources: Resources,
                   ctx: TaskExecutionContext | None = None) -> dict[str, Any]:
    """Fit (or load) a model of the ``days``-ahead return on the features, score it out of
    sample against the naive forecast, and forecast from the latest bar."""
    def progress(fraction: float, message: str) -> None:
        if ctx is not None:
            ctx.check_cancelled()
            ctx.report_progress(fraction, message)

    progress(0.05, f"{code}: loading bars")
    bars = resources.load_bars(params.source, [code], params.start, params.end, params.seed)
    windows: tuple[int, ...] = (5, 10, 20)
    loaded = None
    if params.model_id:
        loaded = resources.model_registry(params.registry).load(params.model_id)
        windows = tuple(loaded[1]["windows"])
    progress(0.2, f"{code}: features")
    data = build_dataset(bars, params.days, windows)
    train, test = time_split(data.x.index, params.test_fraction, gap=params.days)
    last_close = float(bars[~bars["suspended"]]["close"].iloc[-1])
    out: dict[str, Any] = {"kind": params.kind, "stock_code": code, "horizon_days": params.days,
                           "last_date": str(data.latest.index[0][0].date()),
                           "last_close": last_close}
    progress(0.5, f"{code}: fitting")
    if params.kind == "trend":
        up = (data.y > 0).astype(int)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
        clf.fit(data.x[train], up[train])
        prob = clf.predict_proba(data.x[test])[:, 1]
        majority = int(up[train].mean() >= 0.5)
        out["quality"] = {
            "accuracy": float(np.mean((prob >= 0.5) == up[test])),
            "accuracy_naive": float(np.mean(up[test] == majority)),
            "brier": float(np.mean((prob - up[test]) ** 2)),
            "brier_naive": float(np.mean((up[train].mean() - up[test]) ** 2)),
            "n_test": int(test.sum())}
        clf.fit(data.x, up)
        p_up = float(clf.predict_proba(data.latest)[0, 1])
        out.update(direction="up" if p_up >= 0.5 else "down", probability_up=p_up)
    else:
        if loaded is not None:
            model, meta = loaded
            out["model_id"] = params.model_id
            x_test, x_latest = data.x[test][meta["features"]], data.latest[meta["features"]]
        else:
            model = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(data.x[train],
                                                                           data.y[train])
            out["model"] = "ridge on Alpha158-style features, fitted in this task"
            x_test, x_latest = data.x[test], data.latest
        predicted = model.predict(x_test)
        test_dates = x_test.index.get_level_values("date")
        out["quality"] = regression_quality(data.y[test], predicted, test_dates)
        # the out-of-sample forecasts beside what happened, for forecast-vs-actual charts
        out["out_of_sample"] = {
            "dates": [d.strftime("%Y-%m-%d") for d in test_dates],
            "actual": [round(float(v), 6) for v in data.y[test]],
            "forecast": [round(float(v), 6) for v in predicted]}
        if loaded is None:
            model.fit(data.x, data.y)
        ret = float(model.predict(x_latest)[0])
        out.update(predicted_return=ret, predicted_price=round(last_close * (1 + ret), 2))
    progress(1.0, f"{code}: done")
    return out


def batch(params: PredictionParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """One ``price`` forecast per code, as parallel Ray tasks, with aggregate progress."""
    from ..runtime.fanout import Fanout

    single = params.model_copy(update={"kind": "price"})
    resources = Resources.of(ctx)
    forecasts = Fanout(price_or_trend)
    results = forecasts.map([(single, code, resources) for code in params.codes], ctx,
                            partial(_batch_progress, ctx))
    results.sort(key=lambda r: -r["predicted_return"])
    return {"kind": "batch", "horizon_days": params.days, "stocks": len(results),
            "ranking": [{"stock_code": r["stock_code"], "predicted_return": r["predicted_return"],
                         "predicted_price": r["predicted_price"]} for r in results],
            "forecasts": results}


def _batch_progress(ctx: TaskExecutionContext, done: int, total: int) -> None:
    """A batch's finished forecasts as the task's progress."""
    ctx.report_progress(done / total, f"{done}/{total} stocks")


def volatility(params: PredictionParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """Fit on the first part of the history, score one-step forecasts out of sample against
    a naive 22-day historical variance, then refit on everything and forecast ``days``."""
    ctx.report_progress(0.05, "loading bars", stage="data")
    bars = Resources.of(ctx).load_bars(params.source, [params.stock_code], params.start,
                                       params.end, params.seed)
    bars = bars[~bars["suspended"]].sort_values("date")
    r = np.diff(np.log(adjusted_close(bars)))  # no false moves on ex-dates
    high, low = bars["high"].to_numpy(float)[1:], bars["low"].to_numpy(float)[1:]
    n_test = int(len(r) * params.test_fraction)
    split = len(r) - n_test
    if split < 300:
        raise ValueError(f"only {len(r)} returns: need at least 300 before the test period")
    ctx.check_cancelled()
    ctx.report_progress(0.2, f"fitting {params.model} on {split} returns", stage="fit")
    model_var, fitted = _one_step(params.model, r, high, low, split)
    ctx.report_progress(0.6, "scoring out of sample", stage="score")
    realised = r[split:] ** 2
    naive = np.array([np.var(r[t - 22:t]) for t in range(split, len(r))])
    quality = {
        "n_train": split, "n_test": n_test,
        "qlike": qlike(realised, model_var), "qlike_naive": qlike(realised, naive),
        "rmse": float(np.sqrt(np.mean((realised - model_var) ** 2))),
        "rmse_naive": float(np.sqrt(np.mean((realised - naive) ** 2))),
    }
    ctx.check_cancelled()
    ctx.report_progress(0.8, "refitting on the whole history", stage="forecast")
    path = _forecast(params.model, r, high, low, params.days)
    ctx.report_progress(1.0, "done", stage="done")
    return {
        "kind": "volatility", "model": params.model, "stock_code": params.stock_code,
        "horizon_days": params.days,
        "forecast": [float(np.sqrt(v)) for v in path],
        "annualized_vol": float(np.sqrt(np.mean(path) * DAYS)),
        "quality": quality, "fitted": fitted,
    }


def _one_step(model: str, r: np.ndarray, high: np.ndarray, low: np.ndarray,
              split: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Variance forecasts for days split..n-1, each using only data before that day."""
    if model == "garch":
        g = fit_garch(r[:split])
        return g.variances(r)[split:-1], {"omega": g.omega, "alpha": g.alpha,
                                           "beta": g.beta, "mu": g.mu}
    if model == "ewma":
        return ewma_variance(r)[split:-1], {"lambda": 0.94}
    rv = _range_variance(high, low)
    har = fit_har(rv[:split])
    design, _ = har_design(rv)
    # design row k holds features of day k+21 and forecasts day k+22
    rows = design[split - 22:len(r) - 22]
    return np.maximum(rows @ har.coef, 1e-12), {"coef": har.coef.tolist()}


def _forecast(model: str, r: np.ndarray, high: np.ndarray, low: np.ndarray,
              days: int) -> np.ndarray:
    if model == "garch":
        return fit_garch(r).forecast(r, days)
    if model == "ewma":
        return np.full(days, ewma_variance(r)[-1])
    rv = _range_variance(high, low)
    return np.full(days, fit_har(rv).predict_next(rv))


def _range_variance(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    from ..quant.volatility import parkinson_variance

    return np.maximum(parkinson_variance(high, low), 1e-10)
