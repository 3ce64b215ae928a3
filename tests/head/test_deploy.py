"""deploy/: the manifests against KubeRay's schemas, the kustomization's parts fitting
together, and the nightly RayJob's entrypoint and runtime env run on a real head through
Ray's Jobs API, as the KubeRay operator would submit it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import LocalHead
from tests.conftest import wait_for
from tests.head.conftest import client_env
from tests.manifests import check, check_tree

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
IMAGE_ROOT = "/opt/raytasks"  # where deploy/Dockerfile puts the project in the image


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    found = {}
    for name in [*kustomization["resources"], "rayjob-nightly.yaml"]:
        for doc in _docs(KUBERAY / name):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_every_manifest_passes_kuberays_schemas_and_rays_launcher_validation() -> None:
    # Given deploy/, checked against KubeRay's CRDs (shipped with the tests) and Ray's own
    # launcher validation, unknown fields included
    report = check_tree(ROOT / "deploy")
    assert {k: v for k, v in report.items() if v} == {}
    assert "deploy/kuberay/raycluster.yaml RayCluster raytasks" in report
    assert "deploy/kuberay/rayjob-nightly.yaml RayJob raytasks-nightly" in report
    assert any(k.startswith("deploy/cluster.yaml launcher") for k in report)
    # and the check refuses what kubectl --validate=strict and KubeRay would
    cluster = _manifests()[("RayCluster", "raytasks")]
    typo = {**cluster, "spec": {**cluster["spec"], "enableInTreeAutoscale": True}}
    assert check(typo) == ["/spec/enableInTreeAutoscale: not a field of RayCluster"]
    wrong = {**cluster, "spec": {**cluster["spec"], "workerGroupSpecs": "none"}}
    assert any("is not of type 'array'" in p for p in check(wrong))


def test_the_kustomization_parts_fit_together() -> None:
    # Given the kustomization, then every file it names exists
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (KUBERAY / name).is_file(), name
    config_files = [f for g in kustomization["configMapGenerator"] for f in g["files"]]
    assert all((KUBERAY / f).is_file() for f in config_files)
    # the secrets come from git-ignored env files, each with an example of the same keys
    secrets: dict[str, set[str]] = {}
    for generator in kustomization["secretGenerator"]:
        for env_file in generator["envs"]:
            example = KUBERAY / f"{env_file}.example"
            keys = {line.split("=", 1)[0] for line in example.read_text().splitlines()
                    if line and not line.startswith("#")}
            secrets[generator["name"]] = keys
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert {f"deploy/kuberay/{e}" for g in kustomization["secretGenerator"]
            for e in g["envs"]} <= set(ignored)
    # every secret key and claim a manifest names is one the kustomization makes
    objects = _manifests()
    named = _secret_refs(list(objects.values()))
    assert named and all(key in secrets.get(name, set()) for name, key in named), named
    cluster = objects[("RayCluster", "raytasks")]
    assert cluster["spec"]["authOptions"] == {"mode": "token",
                                              "secretName": "raytasks-ray-token"}
    claims = {v["persistentVolumeClaim"]["claimName"]
              for v in cluster["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims <= {name for kind, name in objects if kind == "PersistentVolumeClaim"}
    # the trainer group offers the resource raytasks' training executors ask for, and scales
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    trainer = groups["trainer"]
    assert json.loads(json.loads(trainer["rayStartParams"]["resources"])) == {"trainer": 1}
    assert trainer["minReplicas"] == 0 < trainer["maxReplicas"]
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    # and the settings the pods mount parse into raytasks' Settings
    env = {**os.environ, "RAYTASKS_CONFIG": str(KUBERAY / "raytasks.toml")}
    out = subprocess.run([sys.executable, "-c", "from raytasks import Settings; "
                          "s = Settings(); t = s.for_type('training'); "
                          "print(t.resources, t.min_workers, t.max_workers)"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["{'trainer':", "1.0}", "0", "4"], out.stderr


def _secret_refs(objects: list[Any]) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict):
                refs.append((ref["name"], ref["key"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(objects)
    return refs


def test_the_nightly_rayjob_runs_on_a_real_head_through_the_jobs_api(
        ray_head: LocalHead, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    job = _manifests()[("RayJob", "raytasks-nightly")]["spec"]
    data_dir = tmp_path / "data"
    env = client_env(ray_head, "nightly", str(data_dir))
    # Given raytasks brought up on the head with the CLI (an explicit GCS address)
    up = subprocess.run([str(Path(sys.executable).parent / "raytasks"), "--address",
                         ray_head.gcs_address, "up", "--no-head"], env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr[-3000:]
    # When the operator's submission is made: the RayJob's entrypoint (the image's project
    # path mapped to this checkout) and its runtime env, with this test's namespace and store
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    runtime_env["env_vars"].update(RAYTASKS_NAMESPACE="nightly",
                                   RAYTASKS_DATA_DIR=str(data_dir))
    client = JobSubmissionClient(ray_head.dashboard_url, headers=ray_head.auth_header)
    started = time.monotonic()
    job_id = client.submit_job(entrypoint=job["entrypoint"].replace(IMAGE_ROOT, str(ROOT)),
                               runtime_env=runtime_env,
                               entrypoint_num_cpus=job["entrypointNumCpus"])
    final = wait_for(lambda: client.get_job_status(job_id) in (
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and
        client.get_job_status(job_id), timeout_s=900, interval_s=0.2, what="the nightly job")
    logs = client.get_job_logs(job_id)
    # Then the job succeeded and says what it did
    assert final == JobStatus.SUCCEEDED, logs[-4000:]
    summary = json.loads(logs.strip().splitlines()[-1])
    assert set(summary["backtests"]) == {"000001.SZ", "600000.SH", "300750.SZ", "600519.SH",
                                         "000858.SZ"}
    assert len(summary["ranking"]) == 5 and summary["model_id"].startswith("nightly-ridge:v")
    assert Path(summary["report"]).stat().st_size > 10_000
    # and the store holds every step, completed, found over the Ray client by the CLI
    listed = subprocess.run([str(Path(sys.executable).parent / "raytasks"), "--address",
                             ray_head.client_address, "ls", "--text", "nightly", "--json"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    tasks = {t["id"]: t for t in json.loads(listed.stdout)["items"]}
    assert set(tasks) == set(summary["tasks"].values())
    assert {t["status"] for t in tasks.values()} == {"COMPLETED"}
    assert {t["task_type"] for t in tasks.values()} == {"data", "training", "prediction",
                                                         "backtest"}
    down = subprocess.run([str(Path(sys.executable).parent / "raytasks"), "--address",
                           ray_head.gcs_address, "down"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    print(f"nightly job: {time.monotonic() - started:.1f} s, {summary['seconds']} s inside")
