"""MLflow tracking against a real ``mlflow server`` the test starts on localhost: the runs of
a training (a tune, with its trials), a backtest and a prediction task, read back through MLflow's
client, carry the task's parameters, metrics, artifacts and lineage; a trained model
version is an MLflow registered model version."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from raytasks import TaskCreateRequest, TaskManager, TaskStatus
from raytasks.settings import TaskTypeSettings
from raytasks.tracking import flatten
from tests.conftest import wait_for

RANGE = {"start": "2022-01-04", "end": "2022-12-30"}
MLFLOW = str(Path(sys.executable).parent / "mlflow")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server (SQLite store, artifacts served) on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(
            [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
             "--artifacts-destination", str(tmp_path / "artifacts")],
            stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not start: " +
                                 (tmp_path / "server.log").read_text()[-3000:])
        yield url
    finally:
        os.killpg(server.pid, 15)  # the server and its workers: its own session
        server.wait(timeout=30)


def _finished(client: Any, experiment_id: str, task_id: str) -> list[Any]:
    """The task's runs, once one has finished (a run is logged beside the task's report)."""
    runs = client.search_runs([experiment_id], f"tags.`raytasks.task_id` = '{task_id}'")
    return runs if any(r.info.status == "FINISHED" for r in runs) else []


@pytest.mark.timeout(900)
def test_research_tasks_log_runs_read_back_through_mlflow(make_service: Any,
                                                         mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    service = make_service(mlflow_tracking=True, mlflow_tracking_uri=mlflow_server,
                           task_types={t: TaskTypeSettings(workers=1)
                                       for t in ("training", "backtest", "prediction")})
    tm = TaskManager(service)
    requests = [
        ("training", {"kind": "tune", "codes": ["000001.SZ"], "trials": 4, "rounds": 2,
                      **RANGE}),
        ("backtest", {"stock_code": "600000.SH", "strategy": "momentum", **RANGE}),
        ("prediction", {"stock_code": "000001.SZ", "days": 5, **RANGE}),
    ]
    done = []
    for task_type, parameters in requests:
        began = time.monotonic()
        done.append(tm.wait_sync(tm.submit_sync(TaskCreateRequest(
            name=task_type, task_type=task_type, parameters=parameters)).id, timeout_s=240))
        print(task_type, parameters.get("kind"), f"{time.monotonic() - began:.1f} s")
    assert all(t.status is TaskStatus.COMPLETED for t in done), [t.error for t in done]
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = wait_for(lambda: client.get_experiment_by_name("raytasks"), timeout_s=120,
                          what="the raytasks experiment")
    for task in done:
        # (a run is logged beside the task's report, not before it)
        runs = wait_for(lambda t=task: _finished(client, experiment.experiment_id, t.id),
                        timeout_s=120, what="the task's MLflow run")
        # Then each task has one run: its parameters after defaults, every number of its
        # result as a metric, its lineage as a tag and an artifact
        assert len(runs) == 1, task.task_type
        run = runs[0]
        assert run.info.status == "FINISHED"
        assert run.data.tags["raytasks.task_type"] == task.task_type
        assert run.data.tags["raytasks.code"] == task.lineage["code"]
        for key, value in flatten(task.lineage["parameters"], numbers_only=False).items():
            assert run.data.params[key] == value, key
        metrics = flatten(task.result)
        assert metrics, task.task_type
        for key, value in metrics.items():
            assert run.data.metrics[key] == pytest.approx(value), key
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"result.json", "lineage.json"} <= names, names
        print(task.task_type, task.result.get("kind"), f"{len(metrics)} metrics",
              sorted(names))
    tune, backtest, _prediction = done
    assert "equity_curve.csv" in {a.path for a in client.list_artifacts(
        client.search_runs([experiment.experiment_id],
                           f"tags.`raytasks.task_id` = '{backtest.id}'")[0].info.run_id)}
    # A tune's trials are child runs of its run
    parent = client.search_runs([experiment.experiment_id],
                                f"tags.`raytasks.task_id` = '{tune.id}'")[0]
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4 and all("valid_rmse" in c.data.metrics for c in children)
    # A trained model version is a version of the registered model of its name
    model_id = tune.result["model_id"]
    versions = client.search_model_versions(f"name = '{model_id.split(':')[0]}'")
    assert [v.tags["raytasks.model_id"] for v in versions] == [model_id]
    assert versions[0].run_id == client.search_runs(
        [experiment.experiment_id], f"tags.`raytasks.task_id` = '{tune.id}'")[0].info.run_id


def test_by_default_runs_and_artifacts_stay_under_the_data_directory(
        make_service: Any) -> None:
    from mlflow.tracking import MlflowClient

    from raytasks.tracking import tracking_uri

    service = make_service(mlflow_tracking=True,
                           task_types={"prediction": TaskTypeSettings(workers=1)})
    tm = TaskManager(service)
    task = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="p", task_type="prediction", parameters={"stock_code": "000001.SZ", **RANGE})).id,
        timeout_s=240)
    assert task.status is TaskStatus.COMPLETED, task.error
    data_dir = Path(service.settings.data_dir)
    uri = tracking_uri(service.settings)
    assert uri == f"sqlite:///{data_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    (run,) = wait_for(lambda: (e := client.get_experiment_by_name("raytasks")) is not None
                      and _finished(client, e.experiment_id, task.id),
                      timeout_s=120, what="the task's MLflow run")
    stored = list((data_dir / "mlflow-artifacts").rglob("result.json"))
    assert len(stored) == 1 and run.info.run_id in str(stored[0])
    assert not Path("mlruns").exists()  # nothing in the working directory
