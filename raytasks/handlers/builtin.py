"""The four built-in families: prediction, backtest, training, data.

The handlers import their numerics (numpy, pandas, scikit-learn, numba) in their
executors only: each family's executor imports its own module when it starts (its
warm-up, before its first lease), so a warm executor runs its first task at once, and the
system actors and the other pools never pay for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

from ..context import TaskExecutionContext
from ..registry import TaskTypeSpec
from .params import BacktestParams, DataParams, PredictionParams, TrainingParams


def predict(params: PredictionParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    from .prediction import predict as run

    return run(params, ctx)


def backtest(params: BacktestParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    from .backtests import backtest as run

    return run(params, ctx)


def train(params: TrainingParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    from .training import train_task as run

    return run(params, ctx)


def data(params: DataParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    from .data import data_task as run

    return run(params, ctx)


def _imports(module: str) -> Callable[[], object]:
    """A warm-up that imports a family's module (numpy, pandas, scikit-learn, numba...)."""
    return partial(importlib.import_module, f"{__package__}.{module}")


BUILTIN_TYPES: list[TaskTypeSpec] = [
    TaskTypeSpec("prediction", predict, PredictionParams,
                 timeout_s=600, max_retries=2, builtin=True, warm_up=_imports("prediction")),
    TaskTypeSpec("backtest", backtest, BacktestParams,
                 timeout_s=3600, max_retries=1, preemptible=True, builtin=True,
                 warm_up=_imports("backtests")),
    # a re-run registers a new model version: its id differs, its metrics must not (the
    # solvers' floating point may, in the last digits)
    TaskTypeSpec("training", train, TrainingParams,
                 timeout_s=6 * 3600, max_retries=1, preemptible=True, builtin=True,
                 warm_up=_imports("training"), tolerance=1e-9, volatile=("model_id",)),
    TaskTypeSpec("data", data, DataParams,
                 timeout_s=3600, max_retries=3, builtin=True, warm_up=_imports("data")),
]
