"""The raytasks CLI against the test session's Ray cluster, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from raytasks.settings import TaskTypeSettings

CLI = [str(Path(sys.executable).parent / "raytasks"), "--address", "auto"]


def _run(service: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAYTASKS_NAMESPACE": service.settings.namespace,
           "RAYTASKS_DATA_DIR": str(service.settings.data_dir)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_submit_show_ls_stats_and_exit_codes(make_service: Any) -> None:
    service = make_service(task_types={"prediction": TaskTypeSettings(workers=1)})
    # Given a valid submission, when it is waited for, then it prints the completed task
    out = _run(service, "submit", "prediction", "-p", "stock_code=600000.SH", "-p", "days=3",
               "--priority", "high", "--wait", "--json")
    assert out.returncode == 0, out.stderr
    task = json.loads(out.stdout)
    assert task["status"] == "COMPLETED" and task["priority"] == 1
    assert task["result"]["stock_code"] == "600000.SH" and task["result"]["horizon_days"] == 3
    # Invalid parameters: exit 2 and the field is named
    bad = _run(service, "submit", "prediction", "-p", "stock_code=600000", "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["errors"][0]["field"] == "parameters.stock_code"
    # Unknown id: exit 3
    missing = _run(service, "show", "no-such-id")
    assert missing.returncode == 3 and "no task with id 'no-such-id'" in missing.stderr
    listing = json.loads(_run(service, "ls", "--status", "COMPLETED", "--json").stdout)
    assert [t["id"] for t in listing["items"]] == [task["id"]]
    watched = _run(service, "watch", task["id"])
    assert watched.returncode == 0 and "COMPLETED" in watched.stdout
    stats = json.loads(_run(service, "stats", "--json").stdout)
    assert stats["status_counts"] == {"COMPLETED": 1}
    assert any(e["task_type"] == "prediction" for e in stats["executors"])


def test_bench_runs_both_sides_and_reports_a_ratio(service: Any) -> None:
    from raytasks.bench import format_core, run_core

    figures = run_core(tasks=300, samples=10, workers=1, runtime=service)
    assert figures["raytasks_tasks_per_s"] > 0 and figures["bare_ray_tasks_per_s"] > 0
    assert figures["ratio"] == figures["raytasks_tasks_per_s"] / figures["bare_ray_tasks_per_s"]
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p99_ms"]
    assert "ratio" in format_core(figures)


def test_each_family_from_the_cli_on_csv_and_synthetic_data(make_service: Any,
                                                             tmp_path: Path) -> None:
    from raytasks.quant.data import save_csv
    from raytasks.quant.synthetic import generate_bars

    service = make_service(task_types={t: TaskTypeSettings(workers=1) for t in
                                       ("prediction", "backtest", "training", "data")})
    csv = tmp_path / "csv"
    save_csv(generate_bars(["000001.SZ", "600000.SH"], "2019-01-01", "2023-12-31"), csv)
    market, models = str(tmp_path / "market"), str(tmp_path / "models")
    runs = [
        ["data", "--params", json.dumps({"kind": "sync", "codes": ["000001.SZ", "600000.SH"],
                                         "source": "csv", "data_path": str(csv),
                                         "store_path": market, "start": "2019-01-01",
                                         "end": "2023-12-31"})],
        ["data", "--params", json.dumps({"kind": "validate", "codes": ["000001.SZ"],
                                         "store_path": market, "start": "2019-01-01",
                                         "end": "2023-12-31"})],
        ["prediction", "-p", "stock_code=000001.SZ", "-p", "kind=volatility", "-p",
         "model=ewma", "-p", "source=csv", "-p", f"data_path={csv}", "-p",
         "start=2019-01-01", "-p", "end=2023-12-31"],
        ["backtest", "-p", "kind=risk", "-p", "stock_code=600000.SH", "-p", "source=csv",
         "-p", f"data_path={csv}", "-p", "start=2019-01-01", "-p", "end=2023-12-31"],
        ["training", "--params", json.dumps({"kind": "train", "codes": ["000001.SZ"],
                                             "registry_path": models, "start": "2019-01-01",
                                             "end": "2023-12-31"})],
    ]
    for args in runs:
        out = _run(service, "submit", *args, "--wait", "--json")
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        result = json.loads(out.stdout)["result"]
        assert "placeholder" not in result, args
    assert result["model_id"] == "train-ridge:v1"
