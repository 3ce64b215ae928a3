"""Out of memory (issue 23, item 4): a task that eats its node's memory ends FAILED with
reason ``out_of_memory`` and its peak, and the system actors are never the victim.

The scenario runs in a process of its own (``tests/scripts/oom_kill.py``), on a Ray of
its own whose memory monitor kills workers 5 GiB above what the node used before it
started; it prints its figures, and so does this test (``pytest -s``). On a machine shared
with other work, that work may take the headroom while the cluster starts (Ray's monitor
then kills whatever started last, the system actors too): the scenario is run again, and
without a steady machine the test has no verdict and says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def test_a_task_out_of_memory_ends_with_its_reason_and_peak_and_spares_the_system(
        tmp_path: Path) -> None:
    # Given a Ray whose memory monitor acts 5 GiB above the node's use, and two types
    # that allocate until stopped: ``capped`` (max_memory_mb=300) and ``hog`` (no ceiling,
    # retry_oom with one retry; raytasks' node guard off, so Ray's monitor acts)
    report = _run(tmp_path)
    if "unsteady" in report:  # the machine is shared: other processes took the headroom
        report = _run(tmp_path)
        if "unsteady" in report:
            pytest.skip("no verdict: " + report["unsteady"])
    capped, hog = report["capped"], report["hog"]
    print(f"\nnode {report['node_total_mib']} MiB, used {report['used_before_ray_mib']} MiB "
          f"before Ray, {report['used_when_ready_mib']} MiB with raytasks up; Ray kills "
          f"past {report['ray_kill_line_mib']} MiB")
    for name, task in (("capped", capped), ("hog", hog)):
        print(f"{name}: {task['status']} reason {task['reason']} after attempt "
              f"{task['attempt']}, peak {task['peak_mib']} MiB, ended "
              f"{task['seconds_to_end']} s after submit\n  {task['message']}")
    print(f"raytasks show {hog['task_id']}:\n{report['show_hog']}")
    print(f"Ray's memory monitor killed: {report['ray_oom_kills']}")
    print(f"system actors before: {report['system_before']}\n"
          f"system actors after:  {report['system_after']}; a task after: "
          f"{report['served_after']}; progress still answers: {report['tracker_after']!r}")

    # Then raytasks' own guard ended ``capped`` past its ceiling, once (no retry: retry_oom
    # is off), with a peak just past 300 MiB
    assert capped["status"] == "FAILED" and capped["reason"] == "out_of_memory"
    assert capped["attempt"] == 0
    assert 300 < capped["peak_mib"] < 600, capped
    assert "peak" in capped["message"] and "max_memory_mb" in capped["message"]
    # And Ray's memory monitor killed ``hog``'s executor twice (its retry too); the task
    # ended FAILED out_of_memory, with the peak of its last attempt, not as "lost"
    assert hog["status"] == "FAILED" and hog["reason"] == "out_of_memory", hog
    assert hog["attempt"] == 1
    assert "Ray's memory monitor killed its process" in hog["message"]
    kills = report["ray_oom_kills"]
    hog_kills = [k for k in kills if k["was"] == "executor:hog:0"]
    assert len(hog_kills) == 2, kills
    # (the peak is the most of what its executor measured and what Ray saw at the kill)
    assert hog["peak_mib"] >= min(k["mib_at_death"] for k in hog_kills) - 1, hog
    assert hog["peak_mib"] > 500
    # And `raytasks show` says so: the reason, the peak, both attempts and why they ended
    shown = report["show_hog"]
    assert "status    FAILED" in shown and "out_of_memory: OutOfMemoryError" in shown
    shown_peak = re.search(r"peak memory (\d+) MiB", shown)
    assert shown_peak and abs(int(shown_peak.group(1)) - hog["peak_mib"]) <= 1, shown
    assert shown.count("failed (out_of_memory)") == 2
    # And no system actor was the victim: the same actors, same processes, no restart,
    # and they still serve (a task runs to completion; the tracker answers)
    system = set(report["system_before"])
    assert {"manager", "progress-tracker", "notifier", "engine"} <= system
    assert report["system_after"] == report["system_before"]
    assert not [k for k in kills if k["was"] in system]
    assert report["served_after"] == "COMPLETED"
    assert report["tracker_after"] is not None


def _run(data_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "tests.scripts.oom_kill", str(data_dir),
                          "5000"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report
