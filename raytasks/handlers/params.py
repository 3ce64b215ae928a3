"""Parameter models of the built-in task families (``kind`` picks the sub-type)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

STOCK_CODE = r"^\d{6}\.(SZ|SH|BJ)$"
#: a stock code such as 000001.SZ; in a list, an error names its position (codes.2)
StockCode = Annotated[str, StringConstraints(pattern=STOCK_CODE)]


class DataSource(BaseModel):
    """Where bars come from: ``synthetic`` (seeded) or a ``csv`` directory of <code>.csv."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["synthetic", "csv"] = "synthetic"
    data_path: str | None = Field(default=None, description="directory for source=csv")
    start: str = Field(default="2016-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    end: str = Field(default="2024-12-31", pattern=r"^\d{4}-\d{2}-\d{2}$")
    seed: int = 7

    @model_validator(mode="after")
    def _csv_needs_a_path(self) -> DataSource:
        if self.source == "csv" and not self.data_path:
            raise ValueError("data_path is required when source is 'csv'")
        if self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


class PredictionParams(DataSource):
    stock_code: str = Field(pattern=STOCK_CODE, description="e.g. 000001.SZ, 600000.SH")
    days: int = Field(default=5, ge=1, le=250, description="forecast horizon in trading days")
    kind: Literal["price", "volatility", "trend", "batch"] = "price"
    model: Literal["garch", "ewma", "har"] = Field(
        default="garch", description="volatility model (kind=volatility)")
    test_fraction: float = Field(default=0.2, gt=0.05, lt=0.5,
                                 description="last share of the history kept out of sample")
    model_id: str | None = Field(default=None, description="a registry model (name:vN)")
    registry_path: str = "~/.raytasks/models"
    codes: list[StockCode] = Field(default_factory=list, max_length=2000,
                             description="kind=batch: the stocks to forecast")

    @model_validator(mode="after")
    def _batch_has_codes(self) -> PredictionParams:
        if self.kind == "batch" and not self.codes:
            raise ValueError("codes must list the stocks to forecast when kind is 'batch'")
        return self


class BacktestParams(DataSource):
    kind: Literal["strategy", "optimize", "portfolio", "risk"] = "strategy"
    stock_code: str = Field(default="000001.SZ", pattern=STOCK_CODE)
    strategy: Literal["sma", "momentum", "mean_reversion", "model"] = "sma"
    model_id: str | None = Field(default=None, description="strategy/score 'model'")
    registry_path: str = "~/.raytasks/models"
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
    fast_values: list[int] = Field(default_factory=lambda: list(range(2, 42, 2)))
    slow_values: list[int] = Field(default_factory=lambda: list(range(10, 210, 10)))
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


class TrainingParams(DataSource):
    kind: Literal["train", "tune", "ensemble", "online"] = "train"
    codes: list[StockCode] = Field(default_factory=lambda: ["000001.SZ", "600000.SH", "300750.SZ"],
                             min_length=1, max_length=500)
    horizon: int = Field(default=5, ge=1, le=60, description="label: return over this many days")
    model: Literal["ridge", "random_forest", "gbrt"] = "ridge"
    name: str | None = Field(default=None, pattern=r"^[\w.-]{1,80}$")
    registry_path: str = "~/.raytasks/models"
    test_fraction: float = Field(default=0.2, gt=0.05, lt=0.5)
    windows: list[int] = Field(default_factory=lambda: [5, 10, 20])
    trials: int = Field(default=8, ge=2, le=256, description="tune: random-search trials")
    rounds: int = Field(default=3, ge=1, le=6, description="tune: successive-halving rounds")
    method: Literal["voting", "stacking"] = "stacking"
    model_id: str | None = Field(default=None, description="online: the model to update")
    chunks: int = Field(default=4, ge=1, le=100, description="online: time-ordered updates")



class DataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["sync", "clean", "features", "validate"] = "sync"
    codes: list[StockCode] = Field(default_factory=lambda: ["000001.SZ"], min_length=1,
                             max_length=5000)
    source: Literal["synthetic", "csv", "tushare", "akshare", "baostock"] = "synthetic"
    data_path: str | None = Field(default=None, description="directory for source=csv")
    token: str | None = Field(default=None, description="Tushare token (source=tushare)")
    store_path: str = Field(default="~/.raytasks/market",
                            description="where the Parquet bar store lives")
    start: str = Field(default="2016-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    end: str = Field(default="2024-12-31", pattern=r"^\d{4}-\d{2}-\d{2}$")
    seed: int = 7
    windows: list[int] = Field(default_factory=lambda: [5, 10, 20, 30, 60])

    @model_validator(mode="after")
    def _check(self) -> DataParams:
        if self.source == "csv" and not self.data_path:
            raise ValueError("data_path is required when source is 'csv'")
        if self.source == "tushare" and not self.token:
            raise ValueError("token is required when source is 'tushare'")
        return self
