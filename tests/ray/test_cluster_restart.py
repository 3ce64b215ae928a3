"""The whole cluster goes down with work running and queued; a new one finishes all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _life(stage: str, data_dir: Path, stdin: str = "") -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "tests.scripts.cluster_life", stage,
                          str(data_dir)], input=stdin, capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def _script(name: str, data_dir: Path) -> dict[str, Any]:
    """Run ``tests.scripts.<name>`` (a cluster of its own); the JSON report it prints last."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", f"tests.scripts.{name}", str(data_dir)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


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
    report = _script("node_loss", tmp_path)
    assert report["status"] == "COMPLETED" and report["attempt"] == 1
    assert report["completions"] == 1
    assert report["pid_after"] != report["pid_before"]  # a new executor, on the new node


def test_a_drained_node_hands_back_its_work_before_its_deadline(tmp_path: Path) -> None:
    # Given two tasks running on a worker node (one that looks at its context, one that
    # spins and never does), no retries allowed, and a second node joining
    # When the node is drained with an 8 s deadline and removed at it
    report = _script("node_drain", tmp_path)
    print("drain:", json.dumps({**report, "tasks": [
        {k: v for k, v in t.items() if k != "steps"} for t in report["tasks"]]}))
    assert report["accepted"]
    cooperative, spinning = report["tasks"]
    for task in (cooperative, spinning):
        # Then each was handed back before the deadline: not a failed attempt (no retry
        # was allowed), said as drained, and resumed from its checkpoint on the new node
        assert task["status"] == "COMPLETED" and task["completions"] == 1, task
        assert task["attempt"] == 1 and task["preemptions"] == 1, task
        assert task["reasons"][0] == "drained", task
        assert task["handed_back_after_s"] < report["deadline_s"], task
        assert task["resumed_at"] > 0, task
        assert sorted(set(task["steps"])) == list(range(150)), task
    # and the one that stopped when asked redid nothing; the one forced at the end of its
    # grace time at most the step under way
    assert len(cooperative["steps"]) == 150
    assert len(spinning["steps"]) - 150 <= 1
