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
    assert task["result"]["parameters"]["stock_code"] == "600000.SH"
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
