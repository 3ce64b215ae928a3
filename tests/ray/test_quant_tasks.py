"""Prediction and backtest tasks through the public API, on synthetic data and a CSV directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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
from raytasks.settings import DataSourceSettings, ResourceSettings, TaskTypeSettings
from tests.conftest import wait_for


@pytest.fixture
def quant(make_service: Any, tmp_path: Path) -> Any:
    """Every family with up to one worker, started when its first task comes (a test pays
    only for the families it runs); the data source ``csv`` reads ``tmp_path/csv``."""
    one = TaskTypeSettings(min_workers=0, max_workers=1)
    return make_service(task_types={"prediction": one, "backtest": one, "data": one,
                                    "training": one},
                        resources=ResourceSettings(data_sources={"csv": DataSourceSettings(
                            kind="csv", path=tmp_path / "csv")}))


def _run(service: Any, task_type: str, **parameters: Any) -> Any:
    tm = TaskManager(service)
    task = tm.submit_sync(TaskCreateRequest(name=task_type, task_type=task_type,
                                            parameters=parameters))
    done = tm.wait_sync(task.id, timeout_s=180)
    assert done.status is TaskStatus.COMPLETED, done.error
    return done


def test_backtest_strategy_on_csv_matches_the_library(quant: Any, tmp_path: Path) -> None:
    bars = generate_bars(["600000.SH"], "2019-01-01", "2023-12-31", seed=3)
    save_csv(bars, tmp_path / "csv")
    done = _run(quant, "backtest", kind="strategy", stock_code="600000.SH", source="csv",
                start="2019-01-01", end="2023-12-31", fast=5, slow=30)
    market = Market.from_bars(bars)  # ex-dates and factors round-trip through the CSV
    expected = run(market, sma_crossover(market.adjusted_close, 5, 30))
    assert expected.dividends > 0
    assert done.result["dividends"] == pytest.approx(expected.dividends, rel=1e-9)
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
    assert seen - {0.0, 1.0}, f"progress never moved between 0 and 1: {seen}"
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
    with pytest.raises(InvalidParametersError, match=r"fast .5. must be below slow .5."):
        tm.submit_sync(TaskCreateRequest(name="x", task_type="backtest",
                                         parameters={"fast": 5, "slow": 5}))
    # paths are not parameters: a data source is named in the operator's settings
    with pytest.raises(InvalidParametersError, match=r"parameters\.data_path"):
        tm.submit_sync(TaskCreateRequest(name="x", task_type="prediction", parameters={
            "stock_code": "000001.SZ", "source": "csv", "data_path": "/tmp"}))
    with pytest.raises(InvalidParametersError, match=r"parameters\.model"):
        tm.submit_sync(TaskCreateRequest(name="x", task_type="prediction", parameters={
            "stock_code": "000001.SZ", "kind": "volatility", "model": "lstm"}))


def test_data_sync_is_incremental_and_idempotent_then_clean_validate_features(
        quant: Any, tmp_path: Path) -> None:
    codes = ["000001.SZ", "688111.SH"]
    first = _run(quant, "data", kind="sync", codes=codes, start="2022-01-01", end="2023-06-30")
    assert first.result["rows_written"] > 0
    again = _run(quant, "data", kind="sync", codes=codes, start="2022-01-01", end="2023-06-30")
    assert again.result["rows_written"] == 0
    more = _run(quant, "data", kind="sync", codes=codes, start="2022-01-01", end="2023-12-31")
    expected = generate_bars(codes, "2023-07-01", "2023-12-31")
    assert more.result["rows_written"] == len(expected)
    report = _run(quant, "data", kind="validate", codes=codes, start="2022-01-01",
                  end="2023-12-31").result
    assert report["ok"] and report["rows"] == len(generate_bars(codes, "2022-01-01",
                                                                "2023-12-31"))
    cleaned = _run(quant, "data", kind="clean", codes=codes, start="2022-01-01",
                   end="2023-12-31").result
    assert cleaned["duplicates"] == 0 and cleaned["gaps_filled"] == 0
    task = _run(quant, "data", kind="features", codes=codes, start="2022-01-01",
                end="2023-12-31", windows=[5, 20])
    # the features are in the accepted attempt's own artifact directory
    attempt_dir = Path(quant.settings.artifact_root) / task.id / \
        f"{task.attempt}-{task.lease_token}"
    frame = pd.read_parquet(attempt_dir / task.result["artifact"])
    assert {"KMID", "ROC20", "CORR5"} <= set(frame.columns)
    assert len(frame) == report["rows"]


def test_validate_reports_every_violation_in_a_csv_directory(quant: Any, tmp_path: Path) -> None:
    bars = generate_bars(["000001.SZ"], "2024-01-01", "2024-03-31", suspension_rate=0)
    broken = pd.concat([bars, bars.iloc[[5]]])           # a duplicate
    broken = broken.drop(index=[10])                      # a calendar gap
    broken.loc[20, "high"] = broken.loc[20, "low"] - 1    # impossible OHLC
    save_csv(broken, tmp_path / "csv")
    _run(quant, "data", kind="sync", codes=["000001.SZ"], source="csv", start="2024-01-01",
         end="2024-03-31")
    report = _run(quant, "data", kind="validate", codes=["000001.SZ"], start="2024-01-01",
                  end="2024-03-31").result
    # the store de-duplicates on write; the gap and the bad bar are reported
    assert report["counts"] == {"ohlc": 1, "calendar_gap": 1}
    cleaned = _run(quant, "data", kind="clean", codes=["000001.SZ"], start="2024-01-01",
                   end="2024-03-31").result
    assert cleaned["bad_ohlc"] == 1 and cleaned["gaps_filled"] == 2


def test_training_kinds_register_models_that_predictions_and_backtests_use(
        quant: Any, tmp_path: Path) -> None:
    # two years of three stocks: each kind fits, registers and is used (the fits cost
    # seconds per year of bars; what is asserted does not grow with them)
    common = {"codes": ["000001.SZ", "600000.SH", "300750.SZ"], "start": "2022-01-01",
              "end": "2023-12-31", "windows": [5, 20]}
    trained = _run(quant, "training", kind="train", model="ridge", name="r", **common).result
    assert trained["model_id"] == "r:v1"
    assert {"rmse", "rmse_naive", "ic", "rank_ic", "directional_accuracy"} <= \
        set(trained["metrics"])
    tuned = _run(quant, "training", kind="tune", trials=4, rounds=2, **common).result
    assert len(tuned["rounds"]) == 2 and len(tuned["rounds"][1]) == 2  # half stopped early
    stacked = _run(quant, "training", kind="ensemble", method="stacking", **common).result
    assert set(stacked["weights"]) == {"ridge", "forest", "gbrt"}
    first = _run(quant, "training", kind="online", name="o", **common).result
    again = _run(quant, "training", kind="online", name="o", model_id=first["model_id"],
                 **common).result
    assert (first["model_id"], again["model_id"]) == ("o:v1", "o:v2")
    assert again["updated_from"] == "o:v1"
    # a prediction task loads a registered model by id
    price = _run(quant, "prediction", stock_code="600000.SH", days=5, model_id="r:v1",
                 start="2022-01-01", end="2023-12-31").result
    assert price["model_id"] == "r:v1" and price["predicted_price"] > 0
    # and a backtest trades on its signal
    bt = _run(quant, "backtest", kind="strategy", strategy="model", model_id="r:v1",
              stock_code="600000.SH", start="2022-01-01", end="2023-12-31").result
    assert bt["trades"] > 0


def test_price_trend_batch_and_portfolio(quant: Any) -> None:
    # the portfolio backtest runs on its own family's executor while the forecasts run
    tm = TaskManager(quant)
    portfolio = tm.submit_sync(TaskCreateRequest(name="portfolio", task_type="backtest",
                                                 parameters={"kind": "portfolio", "top_k": 2,
                                                             "rebalance_days": 10,
                                                             "start": "2021-01-01",
                                                             "end": "2023-12-31"}))
    price = _run(quant, "prediction", stock_code="000001.SZ", days=5).result
    recent = generate_bars(["000001.SZ"], "2026-01-01")  # by default, to the latest bar
    latest = recent[~recent["suspended"]].iloc[-1]
    assert price["last_date"] == latest["date"].strftime("%Y-%m-%d")
    assert price["last_close"] == latest["close"]
    last = price["last_close"]
    assert price["predicted_price"] == pytest.approx(last * (1 + price["predicted_return"]),
                                                     abs=0.006)
    assert price["quality"]["n"] > 100 and "rmse_naive" in price["quality"]
    trend = _run(quant, "prediction", stock_code="000001.SZ", days=5, kind="trend").result
    assert trend["direction"] in ("up", "down") and 0 <= trend["probability_up"] <= 1
    assert "accuracy_naive" in trend["quality"]
    batch = _run(quant, "prediction", stock_code="000001.SZ", kind="batch",
                 codes=["000001.SZ", "600000.SH", "300750.SZ", "688111.SH"]).result
    assert batch["stocks"] == 4
    ranked = [r["predicted_return"] for r in batch["ranking"]]
    assert ranked == sorted(ranked, reverse=True)
    done = tm.wait_sync(portfolio.id, timeout_s=180)
    assert done.status is TaskStatus.COMPLETED, done.error
    book = done.result
    assert book["trades"] > 0 and len(book["equity_curve"]) > 100
    assert {"sharpe", "max_drawdown", "beta", "turnover"} <= set(book["risk"])


def test_every_kind_runs_on_a_csv_directory(quant: Any, tmp_path: Path) -> None:
    codes = ["000001.SZ", "600000.SH", "300750.SZ"]
    # two years of three stocks: enough bars for every kind's windows and splits
    save_csv(generate_bars(codes, "2022-01-01", "2023-12-31"), tmp_path / "csv")
    src = {"source": "csv", "start": "2022-01-01", "end": "2023-12-31"}
    kinds = [("data", {"kind": "sync", "codes": codes, **src})]
    kinds += [("data", {"kind": k, "codes": codes, "start": "2022-01-01", "end": "2023-12-31"})
              for k in ("clean", "validate", "features")]
    kinds += [("prediction", {"kind": k, "stock_code": "000001.SZ", **src})
              for k in ("price", "volatility", "trend")]
    kinds += [("prediction", {"kind": "batch", "stock_code": "000001.SZ", "codes": codes,
                              **src})]
    kinds += [("backtest", {"kind": k, "stock_code": "600000.SH", "codes": codes, **src})
              for k in ("strategy", "risk", "portfolio")]
    kinds += [("backtest", {"kind": "optimize", "search": "random", "samples": 40, **src})]
    kinds += [("training", {"kind": k, "codes": codes, "trials": 4, "rounds": 2,
                            "windows": [5, 20], **src})
              for k in ("train", "tune", "ensemble", "online")]
    tm = TaskManager(quant)
    # data tasks run in order (clean/validate/features read what sync stored)
    data_ids = []
    for task_type, params in kinds[:4]:
        prev = [data_ids[-1]] if data_ids else []
        data_ids.append(tm.submit_sync(TaskCreateRequest(
            name=params["kind"], task_type=task_type, parameters=params, depends_on=prev)).id)
    others = tm.submit_many_sync([TaskCreateRequest(name=p["kind"], task_type=t, parameters=p)
                                  for t, p in kinds[4:]])
    done = tm.wait_all_sync(data_ids + [t.id for t in others], timeout_s=600)
    for (task_type, params), task in zip(kinds, done, strict=True):
        assert task.status is TaskStatus.COMPLETED, (task_type, params["kind"], task.error)
        assert task.result["kind"] == params["kind"], task.result
        assert "placeholder" not in task.result
