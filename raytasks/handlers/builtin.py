"""The four built-in families: prediction, backtest, training, data.

Implemented: prediction ``volatility`` and backtest ``strategy``, ``optimize`` and
``risk`` (see :mod:`.prediction`, :mod:`.backtests`). Still PLACEHOLDERS (their
results say ``"placeholder": true`` and compute nothing that could pass for a
forecast): prediction ``price``/``trend``/``batch``, backtest ``portfolio``, and the
training and data families.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..context import TaskExecutionContext
from ..registry import TaskTypeSpec
from .backtests import backtest
from .data import data_task
from .params import BacktestParams, DataParams, PredictionParams, TrainingParams
from .prediction import predict
from .training import train_task


def _placeholder(family: str) -> Any:
    def handler(params: BaseModel, ctx: TaskExecutionContext) -> dict[str, Any]:
        ctx.report_progress(0.0, f"{family}: starting (placeholder)", stage="start")
        ctx.check_cancelled()
        ctx.report_progress(1.0, f"{family}: done (placeholder)", stage="done")
        return {
            "placeholder": True,
            "family": family,
            "note": f"placeholder {family} handler: no numerics yet; parameters were validated",
            "parameters": params.model_dump(mode="json"),
        }

    handler.__name__ = f"{family}_placeholder"
    return handler


BUILTIN_TYPES: list[TaskTypeSpec] = [
    TaskTypeSpec("prediction", predict, PredictionParams,
                 timeout_s=600, max_retries=2, builtin=True),
    TaskTypeSpec("backtest", backtest, BacktestParams,
                 timeout_s=3600, max_retries=1, builtin=True, placeholder=True),
    TaskTypeSpec("training", train_task, TrainingParams,
                 timeout_s=6 * 3600, max_retries=1, builtin=True),
    TaskTypeSpec("data", data_task, DataParams,
                 timeout_s=3600, max_retries=3, builtin=True),
]
