"""Parameter models of the built-in task families (``kind`` picks the sub-type).

Parameters never name a server path: data sources, bar stores and model
registries are named resources of the operator's settings (``source``,
``store``, ``registry``; see :mod:`raytasks.resources`). Every model says how much
work it asks for with :meth:`work_units`, which the manager compares with the
owner's ``max_work_units`` quota. One unit is one bar passed through one
simulation or model fit; reading or writing the bar store costs
:data:`IO_UNITS_PER_BAR` per bar. Bars are estimated at 245 trading days a year.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..quant.clock import completed_through
from ..quant.model_registry import MODEL_ID, MODEL_NAME
from ..resources import ResourceKind
from ..settings import RESOURCE_NAME

STOCK_CODE = r"^\d{6}\.(SZ|SH|BJ)$"
#: a stock code such as 000001.SZ; in a list, an error names its position (codes.2)
StockCode = Annotated[str, StringConstraints(pattern=STOCK_CODE)]
#: a moving-average or feature window, in bars
Window = Annotated[int, Field(ge=1, le=1000)]
#: a resource of the operator's settings, by name
ResourceName = Annotated[str, StringConstraints(pattern=RESOURCE_NAME)]

IO_UNITS_PER_BAR = 10
_TRADING_DAYS_PER_YEAR = 245
#: Units per row a model fit costs, so that one unit is about the same CPU for every kind
#: (about 100 us here): measured with ``raytasks bench units`` (2026-12-07, 2 cores, warm,
#: three stocks over three years): a ridge fit with its features 133 us per row, gradient
#: boosting 1,075, a random forest 2,196, an ensemble of the three 1,987; a backtest or a
#: forecast 20-200 us per bar.
FIT_UNITS = {"ridge": 1, "gbrt": 10, "random_forest": 20}
ENSEMBLE_UNITS = 20


def _bars(start: str, end: str) -> int:
    """A generous estimate of one stock's bars between two dates."""
    days = (date.fromisoformat(end) - date.fromisoformat(start)).days + 1
    return max(1, math.ceil(days * _TRADING_DAYS_PER_YEAR / 365))


def _check_dates(start: str, end: str) -> None:
    for field, value in (("start", start), ("end", end)):
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{field} {value!r} is not a date (YYYY-MM-DD)") from None
    if start >= end:
        raise ValueError(f"start {start} must be before end {end}")


class DataSource(BaseModel):
    """Where bars come from: a data source the operator named (``synthetic`` is built in)."""

    model_config = ConfigDict(extra="forbid")

    source: ResourceName = Field(default="synthetic", description="a data source of the "
                                 "operator's settings (resources.data_sources)")
    start: str = Field(default="2016-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    end: str = Field(default_factory=completed_through, pattern=r"^\d{4}-\d{2}-\d{2}$",
                     description="default: through the last completed trading day")
    seed: int = 7

    @model_validator(mode="after")
    def _dates(self) -> DataSource:
        _check_dates(self.start, self.end)
        return self

    def bars(self) -> int:
        """Estimated bars of one stock over ``start``..``end``."""
        return _bars(self.start, self.end)

    def resource_refs(self) -> dict[str, tuple[ResourceKind, str]]:
        """The named resources these parameters use, by field."""
        return {"parameters.source": ("data_sources", self.source)}


class PredictionParams(DataSource):
    stock_code: str = Field(pattern=STOCK_CODE, description="e.g. 000001.SZ, 600000.SH")
    days: int = Field(default=5, ge=1, le=250, description="forecast horizon in trading days")
    kind: Literal["price", "volatility", "trend", "batch"] = "price"
    model: Literal["garch", "ewma", "har"] = Field(
        default="garch", description="volatility model (kind=volatility)")
    test_fraction: float = Field(default=0.2, gt=0.05, lt=0.5,
                                 description="last share of the history kept out of sample")
    model_id: str | None = Field(default=None, pattern=MODEL_ID,
                                 description="a registry model (name:vN)")
    registry: ResourceName = Field(default="models", description="the model registry "
                                   "(resources.model_registries) that holds model_id")
    codes: list[StockCode] = Field(default_factory=list, max_length=2000,
                             description="kind=batch: the stocks to forecast")

    @model_validator(mode="after")
    def _batch_has_codes(self) -> PredictionParams:
        if self.kind == "batch" and not self.codes:
            raise ValueError("codes must list the stocks to forecast when kind is 'batch'")
        return self

    def work_units(self) -> int:
        """Bars fitted: one stock's, or every listed stock's for ``batch``."""
        return self.bars() * (len(self.codes) if self.kind == "batch" else 1)

    def resource_refs(self) -> dict[str, tuple[ResourceKind, str]]:
        refs = super().resource_refs()
        if self.model_id:
            refs["parameters.registry"] = ("model_registries", self.registry)
        return refs


class BacktestParams(DataSource):
    kind: Literal["strategy", "optimize", "portfolio", "risk"] = "strategy"
    stock_code: str = Field(default="000001.SZ", pattern=STOCK_CODE)
    strategy: Literal["sma", "momentum", "mean_reversion", "model"] = "sma"
    model_id: str | None = Field(default=None, pattern=MODEL_ID,
                                 description="strategy/score 'model': a registry model")
    registry: ResourceName = Field(default="models", description="the model registry "
                                   "(resources.model_registries) that holds model_id")
    threshold: float = Field(default=0.0, description="model: invest while the predicted "
                                                      "return is above this")
    codes: list[StockCode] = Field(default_factory=lambda: ["000001.SZ", "600000.SH", "300750.SZ",
                                                      "688111.SH", "002594.SZ"],
                             max_length=500, description="portfolio: the universe")
    top_k: int = Field(default=2, ge=1, le=100, description="portfolio: stocks held")
    rebalance_days: int = Field(default=20, ge=1, le=250)
    fast: int = Field(default=5, ge=1, le=250)
    slow: int = Field(default=20, ge=2, le=500)
    lookback: int = Field(default=20, ge=1, le=500)
    window: int = Field(default=20, ge=2, le=500)
    entry_z: float = Field(default=1.0, gt=0, le=5)
    cash: float = Field(default=1_000_000.0, gt=0)
    commission_rate: float = Field(default=0.00025, ge=0, le=0.01)
    commission_min: float = Field(default=5.0, ge=0)
    # 200 x 200 values at most: a grid is refused before it can fill memory
    fast_values: list[Window] = Field(default_factory=lambda: list(range(2, 42, 2)),
                                      min_length=1, max_length=200)
    slow_values: list[Window] = Field(default_factory=lambda: list(range(10, 210, 10)),
                                      min_length=1, max_length=200)
    chunks: int = Field(default=2, ge=1, le=256, description="optimize: parallel pieces")
    search: Literal["grid", "random"] = "grid"
    samples: int = Field(default=100, ge=1, le=100_000,
                         description="optimize, search=random: pairs drawn from the grid")

    @model_validator(mode="after")
    def _consistent(self) -> BacktestParams:
        if self.strategy == "sma" and self.kind in ("strategy", "risk") and \
                self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        if self.strategy == "model" and not self.model_id:
            raise ValueError("model_id is required when strategy is 'model'")
        if self.kind == "portfolio" and self.top_k > len(self.codes):
            raise ValueError(f"top_k ({self.top_k}) is more than the {len(self.codes)} codes")
        return self

    def pairs(self) -> int:
        """SMA pairs an ``optimize`` sweeps (fast < slow; at most ``samples`` at random)."""
        grid = sum(1 for f in self.fast_values for s in self.slow_values if f < s)
        return min(grid, self.samples) if self.search == "random" else grid

    def work_units(self) -> int:
        """Bars simulated: grid pairs x bars for ``optimize``, codes x bars for a portfolio."""
        bars = self.bars()
        if self.kind == "optimize":
            return max(1, self.pairs()) * bars
        units = bars * (len(self.codes) if self.kind == "portfolio" else 1)
        if self.strategy == "model":
            units += bars * (len(self.codes) if self.kind == "portfolio" else 1)
        return units

    def resource_refs(self) -> dict[str, tuple[ResourceKind, str]]:
        refs = super().resource_refs()
        if self.strategy == "model":
            refs["parameters.registry"] = ("model_registries", self.registry)
        return refs


class TrainingParams(DataSource):
    kind: Literal["train", "tune", "ensemble", "online"] = "train"
    codes: list[StockCode] = Field(default_factory=lambda: ["000001.SZ", "600000.SH", "300750.SZ"],
                             min_length=1, max_length=500)
    horizon: int = Field(default=5, ge=1, le=60, description="label: return over this many days")
    model: Literal["ridge", "random_forest", "gbrt"] = "ridge"
    name: str | None = Field(default=None, pattern=MODEL_NAME,
                             description="the model's name in the registry")
    registry: ResourceName = Field(default="models", description="the model registry "
                                   "(resources.model_registries) to save to")
    test_fraction: float = Field(default=0.2, gt=0.05, lt=0.5)
    windows: list[Window] = Field(default_factory=lambda: [5, 10, 20], min_length=1,
                                  max_length=10)
    trials: int = Field(default=8, ge=2, le=256, description="tune: random-search trials")
    rounds: int = Field(default=3, ge=1, le=6, description="tune: successive-halving rounds")
    method: Literal["voting", "stacking"] = "stacking"
    model_id: str | None = Field(default=None, pattern=MODEL_ID,
                                 description="online: the model to update")
    chunks: int = Field(default=4, ge=1, le=100, description="online: time-ordered updates")

    def work_units(self) -> int:
        """Rows fitted (codes x bars), weighed by the model's cost per row
        (:data:`FIT_UNITS`, :data:`ENSEMBLE_UNITS`), times trials x rounds for ``tune``."""
        rows = len(self.codes) * self.bars()
        if self.kind == "tune":
            return rows * self.trials * self.rounds
        if self.kind == "ensemble":
            return rows * ENSEMBLE_UNITS
        return rows * (FIT_UNITS[self.model] if self.kind == "train" else 1)

    def resource_refs(self) -> dict[str, tuple[ResourceKind, str]]:
        return {**super().resource_refs(),
                "parameters.registry": ("model_registries", self.registry)}


class DataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["sync", "clean", "features", "validate"] = "sync"
    codes: list[StockCode] = Field(default_factory=lambda: ["000001.SZ"], min_length=1,
                             max_length=5000)
    source: ResourceName = Field(default="synthetic", description="sync: a data source of "
                                 "the operator's settings (resources.data_sources)")
    store: ResourceName = Field(default="market", description="the bar store "
                                "(resources.bar_stores); each owner has its own part of it")
    start: str = Field(default="2016-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    end: str = Field(default_factory=completed_through, pattern=r"^\d{4}-\d{2}-\d{2}$",
                     description="default: through the last completed trading day")
    seed: int = 7
    windows: list[Window] = Field(default_factory=lambda: [5, 10, 20, 30, 60], min_length=1,
                                  max_length=10)

    @model_validator(mode="after")
    def _dates(self) -> DataParams:
        _check_dates(self.start, self.end)
        return self

    def work_units(self) -> int:
        """Bars read or written: codes x bars, at the I/O weight for ``sync``."""
        units = len(self.codes) * _bars(self.start, self.end)
        return units * (IO_UNITS_PER_BAR if self.kind == "sync" else 1)

    def resource_refs(self) -> dict[str, tuple[ResourceKind, str]]:
        refs: dict[str, tuple[ResourceKind, str]] = {
            "parameters.store": ("bar_stores", self.store)}
        if self.kind == "sync":
            refs["parameters.source"] = ("data_sources", self.source)
        return refs
