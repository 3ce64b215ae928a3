"""Prediction tasks. ``volatility`` is real; ``price``, ``trend`` and ``batch`` are still
placeholders and say so in their result."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..context import TaskExecutionContext
from ..quant.data import load_bars
from ..quant.volatility import ewma_variance, fit_garch, fit_har, har_design, qlike
from .params import PredictionParams


def predict(params: PredictionParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    if params.kind != "volatility":
        ctx.report_progress(1.0, f"{params.kind}: placeholder")
        return {"placeholder": True, "kind": params.kind,
                "note": f"prediction kind {params.kind!r} is a placeholder: no forecast yet; "
                        "kind 'volatility' is implemented",
                "parameters": params.model_dump(mode="json")}
    return volatility(params, ctx)


def volatility(params: PredictionParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """Fit on the first part of the history, score one-step forecasts out of sample against
    a naive 22-day historical variance, then refit on everything and forecast ``days``."""
    ctx.report_progress(0.05, "loading bars", stage="data")
    bars = load_bars([params.stock_code], params.start, params.end, params.source,
                     params.data_path, params.seed)
    bars = bars[~bars["suspended"]]
    close = bars["close"].to_numpy(float)
    r = np.diff(np.log(close))
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
        "annualized_vol": float(np.sqrt(np.mean(path) * 252)),
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
