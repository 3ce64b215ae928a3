"""The whole cluster goes down with work running and queued; a new one finishes all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _life(stage: str, data_dir: Path, stdin: str = "") -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "tests.scripts.cluster_life", stage,
                          str(data_dir)], input=stdin, capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_acknowledged_tasks_survive_a_whole_cluster_restart(tmp_path: Path) -> None:
    # Given four acknowledged tasks, one running, when the whole cluster stops
    ids = _life("first", tmp_path)
    # Then a new cluster on the same store runs every one of them to completion, once
    report = json.loads(_life("second", tmp_path, stdin=ids))
    assert report["status"] == ["COMPLETED"] * 4
    assert report["completions"] == [1, 1, 1, 1]
    assert report["attempts"][0] == 1  # the one cut off mid-run was retried


def test_a_lost_worker_node_costs_one_retry_and_nothing_else(tmp_path: Path) -> None:
    # Given executors that live on worker nodes only, when the node running a task dies
    # and another joins, then the task runs again there and completes exactly once
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "tests.scripts.node_loss", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == "COMPLETED" and report["attempt"] == 1
    assert report["completions"] == 1
    assert report["pid_after"] != report["pid_before"]  # a new executor, on the new node
