"""The raytasks CLI against the test session's Ray cluster, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from raytasks.settings import DataSourceSettings, ResourceSettings, TaskTypeSettings

RAYTASKS = str(Path(sys.executable).parent / "raytasks")


def _run(service: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return _cli(service.settings.namespace, service.settings.data_dir, *args)


def _cli(namespace: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import ray

    # the session's cluster by its GCS address: "auto" could pick another Ray on this machine
    env = {**os.environ, "RAYTASKS_NAMESPACE": namespace, "RAYTASKS_DATA_DIR": str(data_dir)}
    address = ray.get_runtime_context().gcs_address
    return subprocess.run([RAYTASKS, "--address", address, *args], capture_output=True,
                          text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)


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
    refused = _run(service, "cancel", task["id"])
    assert refused.returncode == 1 and "is COMPLETED; it cannot become CANCELLED" in refused.stderr
    again = _run(service, "retry", task["id"], "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["error"] == \
        "InvalidTransitionError"
    watched = _run(service, "watch", task["id"])
    assert watched.returncode == 0 and "COMPLETED" in watched.stdout
    stats = json.loads(_run(service, "stats", "--json").stdout)
    assert stats["status_counts"] == {"COMPLETED": 1}
    assert any(e["task_type"] == "prediction" for e in stats["executors"])


def test_bench_runs_every_path_beside_bare_ray(service: Any) -> None:
    from raytasks.benchmarks.core import format_core, run_core

    # samples enough for CPU clock ticks (10 ms) to show on every path: two turns each
    figures = run_core(tasks=200, samples=40, workers=1, runtime=service)
    for path in ("batch", "bare_batch", "sequential", "concurrent", "bare_concurrent",
                 "acks_per_s"):
        assert figures[path] > 0, path
    assert 0 < figures["round_trip_p50_ms"] <= figures["round_trip_p99_ms"]
    assert 0 < figures["bare_round_trip_p50_ms"] <= figures["bare_round_trip_p99_ms"]
    assert 0 <= figures["high_overtake"] <= 1 and figures["idle_start_p50_ms"] > 0
    assert figures["bare_idle_start_p50_ms"] > 0
    # the CPU of a round trip, by process: this client's, and the manager's beside it (a
    # lone task's round trip runs directly, so the manager's share may round to nothing)
    cpu = figures["round_trip_cpu_ms"]
    assert cpu["client"] > 0 and cpu["Manager"] >= 0
    assert sum(figures["bare_round_trip_cpu_ms"].values()) > 0
    text = format_core(figures)
    assert "bare Ray" in text and "ratio" in text and "CPU per round trip" in text


def test_every_kind_from_the_cli_on_synthetic_and_csv_data(make_service: Any,
                                                           tmp_path: Path) -> None:
    from raytasks.quant.data import save_csv
    from raytasks.quant.synthetic import generate_bars

    csv = tmp_path / "csv"
    # the operator names the CSV directory and a bar store and model registry per source
    service = make_service(
        task_types={t: TaskTypeSettings(workers=1) for t in
                    ("prediction", "backtest", "training", "data")},
        resources=ResourceSettings(
            data_sources={"csv": DataSourceSettings(kind="csv", path=csv)},
            bar_stores={s: tmp_path / s / "market" for s in ("synthetic", "csv")},
            model_registries={s: tmp_path / s / "models" for s in ("synthetic", "csv")}))
    codes = ["000001.SZ", "600000.SH", "300750.SZ"]
    # two years of three stocks: enough bars for every kind's windows and splits
    save_csv(generate_bars(codes, "2022-01-01", "2023-12-31"), csv)
    # every kind on synthetic data; from the CSV directory a sync and a submit-many of the
    # families that read bars (tests/ray/test_quant_tasks.py runs every kind on CSV)
    for source in ("synthetic", "csv"):
        src = {"source": source, "start": "2022-01-01", "end": "2023-12-31"}
        # data kinds first, in order: clean/validate/features read what sync stored
        data = [{"kind": "sync", "codes": codes, "store": source, **src}]
        if source == "synthetic":
            data += [{"kind": k, "codes": codes, "store": source, "start": "2022-01-01",
                      "end": "2023-12-31"} for k in ("clean", "validate", "features")]
        for params in data:
            out = _run(service, "submit", "data", "--params", json.dumps(params), "--wait",
                       "--json")
            assert out.returncode == 0, (params, out.stdout, out.stderr)
            assert json.loads(out.stdout)["result"]["kind"] == params["kind"]
        kinds = [("prediction", {"kind": k, "stock_code": "000001.SZ", "codes": codes, **src})
                 for k in ("price", "volatility", "trend", "batch")]
        kinds += [("backtest", {"kind": k, "stock_code": "600000.SH", "codes": codes,
                                "search": "random", "samples": 30, **src})
                  for k in ("strategy", "optimize", "portfolio", "risk")]
        kinds += [("training", {"kind": k, "codes": codes, "registry": source,
                                "trials": 4, "rounds": 2, "windows": [5, 20], **src})
                  for k in ("train", "tune", "ensemble", "online")]
        if source == "csv":
            kinds = [(t, p) for t, p in kinds if p["kind"] in ("price", "strategy", "train")]
        batch = tmp_path / f"{source}.json"
        batch.write_text(json.dumps([{"name": f"{t}-{p['kind']}", "task_type": t,
                                      "parameters": p} for t, p in kinds]))
        out = _run(service, "submit-many", str(batch), "--wait", "--json")
        assert out.returncode == 0, (source, out.stdout[-2000:], out.stderr[-2000:])
        results = json.loads(out.stdout)
        assert [(r["task_type"], r["result"]["kind"]) for r in results] == \
            [(t, p["kind"]) for t, p in kinds]
    bad = _run(service, "submit-many", "-", "--json")
    assert bad.returncode == 2  # empty standard input is not a JSON list


def test_up_and_down_against_a_running_cluster(ray_cluster: None, tmp_path: Path) -> None:
    import ray

    namespace = f"cli-up-{os.getpid()}"
    up = _cli(namespace, tmp_path, "up", "--no-head")
    assert up.returncode == 0 and f"namespace '{namespace}'" in up.stdout, up.stderr
    assert ray.get_actor("manager", namespace=namespace) is not None  # detached: still up
    down = _cli(namespace, tmp_path, "down")
    assert down.returncode == 0 and "actors stopped" in down.stdout, down.stderr
    for role in ("manager", "notifier", "progress-tracker", "engine"):
        try:
            ray.get_actor(role, namespace=namespace)
        except ValueError:
            continue
        raise AssertionError(f"{role} still running after down")
