"""Chaos in the test suite: kills of every actor kind, kills during restarts, and an executor
paused past its lease TTL, over a few hundred tasks, on SQLite and on PostgreSQL.

The run happens in a Ray cluster of its own (a subprocess), since it kills things.
``make soak`` runs the long version (tests/chaos.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_chaos_loses_nothing_and_fences_every_attempt(store_url: str, tmp_path: Path) -> None:
    # Given ~250 tasks (retries, large results, chains, cancels) on two executors
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    # When every kind of actor is killed at random, the manager twice in a row, and an
    # executor is paused (SIGSTOP) past its lease TTL and resumed, while urgent tasks
    # preempt running ones
    out = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--tasks", "250", "--kills", "14",
         "--seconds", "25", "--seed", "7", "--store-url", store_url,
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    report = json.loads(out.stdout[out.stdout.index("{"):])
    # Then nothing is lost, stuck or completed twice, no superseded attempt's result is
    # read, no progress follows a final status, the stream skips nothing, chains ran in order
    assert report["problems"] == [], report
    assert out.returncode == 0, out.stderr[-3000:]
    assert set(report["kills"]) >= {"manager", "manager_twice", "tracker", "notifier",
                                    "engine", "executor", "everything", "pause", "trainer"}
    # and deadlines preempted runs meanwhile, which still completed once (checked above)
    assert report["preempted_attempts"] > 0
    assert sum(report["statuses"].values()) == report["tasks"] >= 250
    assert report["tasks_run_more_than_once"] > 0  # the kills and the pause really bit
    # plain submits were committed by the client itself (the direct intake), the others
    # (chains) through the manager
    assert 0 < report["committed_by_the_client"] < report["tasks"]
