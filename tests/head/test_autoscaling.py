"""Autoscaled executor pools on Ray's fake multi-node autoscaler: trainer nodes appear while
training executors wait for a ``trainer`` resource, the work runs on them (tune trials fan out
over them), and they go once the pool has shrunk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cluster import LocalHead
from tests.head.conftest import client_env

ROOT = Path(__file__).resolve().parents[2]


def fake_cluster(gcs_port: int) -> dict[str, object]:
    """A launcher config for ``fake_multinode``: nodes are raylets on this machine."""
    return {
        "cluster_name": "raytasks-fake", "max_workers": 2, "upscaling_speed": 10.0,
        "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": f"127.0.0.1:{gcs_port}"},
        "auth": {"ssh_user": "ray"},
        "available_node_types": {
            # the head has no CPU for trials and no trainer resource
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {},
                                 "max_workers": 0},
            "trainer": {"resources": {"CPU": 1, "trainer": 1}, "node_config": {},
                        "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        **{key: [] for key in ("initialization_commands", "setup_commands",
                               "head_setup_commands", "worker_setup_commands",
                               "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }


def test_training_demand_adds_trainer_nodes_and_idle_pools_give_them_back(
        tmp_path: Path) -> None:
    # Given a fake autoscaling cluster whose head has no trainer resource
    head = LocalHead(num_cpus=0, env={"RAY_FAKE_CLUSTER": "1",
                                      "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    head.autoscaling_config = fake_cluster(head.gcs_port)
    head.start()
    try:
        env = client_env(head, "autoscale", str(tmp_path / "data"), PYTHONPATH=str(ROOT))
        # When training and tune tasks arrive (the scenario script drives and times it)
        out = subprocess.run([sys.executable, "-m", "tests.scripts.autoscale",
                              head.gcs_address, str(tmp_path / "data")], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    finally:
        head.stop()
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    # Then before: one node, no trainer, and an idle raytasks holds no training executor
    assert (report["nodes_before"], report["trainer_nodes_before"]) == (1, 0)
    assert report["pool_before"]["live"] == 0 and report["pool_before"]["min"] == 0
    # the pending executors made the autoscaler add two trainer nodes, the work completed on
    # them, and the tune trials fanned out over both
    assert report["trainer_nodes_during"] == 2 and report["nodes_during"] == 3
    assert report["status"] == ["COMPLETED", "COMPLETED"], report["errors"]
    assert report["executors"] and all(e["node_on_trainer"] for e in report["executors"])
    assert report["ran_on_trainers"] == [True, True], report["attempts"]
    assert report["trials"] >= 6 and report["trial_nodes_on_trainers"] == [True]
    assert report["trial_nodes"] == 2
    # and once idle the pool shrank to none and the autoscaler removed both nodes
    assert report["nodes_after"] == 1
    assert ("grow", 2, 2) in [tuple(r) for r in report["resizes"]]
    assert report["resizes"][-1][0] == "shrink" and report["resizes"][-1][2] == 0
