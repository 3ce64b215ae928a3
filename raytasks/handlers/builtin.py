"""The four built-in families: prediction, backtest, training, data.

PLACEHOLDERS: the real numerics arrive with their own issue. Until then each
handler validates its parameters, reports progress, and returns a result that
says plainly it is a placeholder (``"placeholder": true``) and computes
nothing that could pass for a forecast.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..context import TaskExecutionContext
from ..registry import TaskTypeSpec

STOCK_CODE = r"^\d{6}\.(SZ|SH|BJ)$"


class PredictionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stock_code: str = Field(pattern=STOCK_CODE, description="e.g. 000001.SZ, 600000.SH")
    days: int = Field(default=5, ge=1, le=250, description="forecast horizon in trading days")
    kind: Literal["price", "volatility", "trend", "batch"] = "price"


class BacktestParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["strategy", "optimize", "portfolio", "risk"] = "strategy"
    stock_code: str | None = Field(default=None, pattern=STOCK_CODE)


class TrainingParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["train", "tune", "ensemble", "online"] = "train"


class DataParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["sync", "clean", "features", "validate"] = "sync"


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
    TaskTypeSpec("prediction", _placeholder("prediction"), PredictionParams,
                 timeout_s=600, max_retries=2, builtin=True, placeholder=True),
    TaskTypeSpec("backtest", _placeholder("backtest"), BacktestParams,
                 timeout_s=3600, max_retries=1, builtin=True, placeholder=True),
    TaskTypeSpec("training", _placeholder("training"), TrainingParams,
                 timeout_s=6 * 3600, max_retries=1, builtin=True, placeholder=True),
    TaskTypeSpec("data", _placeholder("data"), DataParams,
                 timeout_s=3600, max_retries=3, builtin=True, placeholder=True),
]
