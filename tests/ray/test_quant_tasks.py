"""Prediction and backtest tasks through the public API, on synthetic data and a CSV directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raytasks import (
    InvalidParametersError,
    ProgressTracker,
    TaskCreateRequest,
    TaskManager,
    TaskStatus,
)
from raytasks.quant.backtest import Market, run, sma_crossover
from raytasks.quant.data import save_csv
from raytasks.quant.synthetic import generate_bars
from raytasks.settings import TaskTypeSettings
from tests.conftest import wait_for


@pytest.fixture
def quant(make_service: Any) -> Any:
    return make_service(task_types={"prediction": TaskTypeSettings(workers=1),
                                    "backtest": TaskTypeSettings(workers=1)})


def _run(service: Any, task_type: str, **parameters: Any) -> Any:
    tm = TaskManager(service)
    task = tm.submit_sync(TaskCreateRequest(name=task_type, task_type=task_type,
                                            parameters=parameters))
    done = tm.wait_sync(task.id, timeout_s=180)
    assert done.status is TaskStatus.COMPLETED, done.error
    return done


def test_backtest_strategy_on_csv_matches_the_library(quant: Any, tmp_path: Path) -> None:
    bars = generate_bars(["600000.SH"], "2019-01-01", "2023-12-31", seed=3)
    save_csv(bars, tmp_path / "bars")
    done = _run(quant, "backtest", kind="strategy", stock_code="600000.SH", source="csv",
                data_path=str(tmp_path / "bars"), start="2019-01-01", end="2023-12-31",
                fast=5, slow=30)
    expected = run(Market.from_bars(bars), sma_crossover(bars["close"].to_numpy(), 5, 30))
    assert done.result["total_return"] == pytest.approx(expected.total_return, rel=1e-6)
    assert done.result["fees"] == pytest.approx(expected.fees, rel=1e-6)
    assert done.result["trades"] == len(expected.trades)
    assert set(done.result["risk"]) >= {"sharpe", "sortino", "max_drawdown", "var_historical",
                                        "cvar_parametric", "beta", "turnover"}


def test_optimize_fans_out_and_reports_progress(quant: Any) -> None:
    tm = TaskManager(quant)
    task = tm.submit_sync(TaskCreateRequest(name="opt", task_type="backtest", parameters={
        "kind": "optimize", "stock_code": "300750.SZ", "chunks": 4,
        "fast_values": list(range(2, 30, 2)), "slow_values": list(range(10, 130, 10))}))
    seen = set()

    def finished() -> bool:
        seen.add(round(ProgressTracker(quant).get_progress_sync(task.id).percentage, 2))
        return tm.get_task_sync(task.id).status.finished

    wait_for(finished, timeout_s=180, interval_s=0.02)
    done = tm.get_task_sync(task.id)
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.result["combinations"] == sum(1 for f in range(2, 30, 2)
                                              for s in range(10, 130, 10) if f < s)
    top = done.result["top"]
    assert top[0]["sharpe"] == done.result["best"]["sharpe"] == max(r["sharpe"] for r in top)


def test_volatility_forecast_beats_or_reports_against_its_baseline(quant: Any) -> None:
    done = _run(quant, "prediction", stock_code="000001.SZ", kind="volatility", days=10,
                model="garch")
    r = done.result
    assert len(r["forecast"]) == 10 and all(v > 0 for v in r["forecast"])
    q = r["quality"]
    assert q["n_test"] > 100 and np.isfinite(q["qlike"]) and np.isfinite(q["qlike_naive"])
    # GARCH data (the generator's own process): the fitted model beats a 22-day variance
    assert q["qlike"] < q["qlike_naive"]
    for model in ("ewma", "har"):
        other = _run(quant, "prediction", stock_code="000001.SZ", kind="volatility",
                     model=model)
        assert other.result["quality"]["qlike"] > 0


def test_invalid_quant_parameters_are_named(quant: Any) -> None:
    tm = TaskManager(quant)
    with pytest.raises(InvalidParametersError, match="fast .5. must be below slow .5."):
        tm.submit_sync(TaskCreateRequest(name="x", task_type="backtest",
                                         parameters={"fast": 5, "slow": 5}))
    with pytest.raises(InvalidParametersError, match="data_path is required"):
        tm.submit_sync(TaskCreateRequest(name="x", task_type="prediction", parameters={
            "stock_code": "000001.SZ", "source": "csv"}))
    with pytest.raises(InvalidParametersError, match=r"parameters\.model"):
        tm.submit_sync(TaskCreateRequest(name="x", task_type="prediction", parameters={
            "stock_code": "000001.SZ", "kind": "volatility", "model": "lstm"}))
