"""Lineage, recorded where it happens: a training task's lineage names the bars it read and
the model it saved; a prediction that loads that model names the same version and digest."""

from __future__ import annotations

from typing import Any

from raytasks import TaskCreateRequest, TaskManager, TaskStatus
from raytasks.lineage import changed
from raytasks.settings import TaskTypeSettings
from tests.ray.test_cli import _run

RANGE = {"start": "2022-01-04", "end": "2022-12-30"}


def test_a_result_names_its_code_parameters_data_and_models(make_service: Any) -> None:
    # Given one executor each for training and prediction
    service = make_service(task_types={"training": TaskTypeSettings(workers=1),
                                       "prediction": TaskTypeSettings(workers=1)})
    tm = TaskManager(service)
    # When a ridge model is trained on two stocks, then used for a prediction
    trained = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="t", task_type="training", parameters={
            "kind": "train", "model": "ridge", "codes": ["000001.SZ", "600000.SH"],
            **RANGE})).id, timeout_s=240)
    assert trained.status is TaskStatus.COMPLETED, trained.error
    model_id = trained.result["model_id"]
    predicted = tm.wait_sync(tm.submit_sync(TaskCreateRequest(
        name="p", task_type="prediction", parameters={
            "stock_code": "000001.SZ", "model_id": model_id, **RANGE})).id, timeout_s=240)
    assert predicted.status is TaskStatus.COMPLETED, predicted.error
    # Then each lineage names the code, the parameters after defaults, seeds and libraries
    train_l, predict_l = trained.lineage, predicted.lineage
    assert train_l and predict_l
    assert train_l["code"] == predict_l["code"] and len(train_l["code"]) == 64
    assert train_l["parameters"]["model"] == "ridge" and "seed" in train_l["seeds"]
    assert train_l["parameters"]["registry"] == "models"  # a default, written out
    assert {"python", "numpy", "pandas", "scikit-learn"} <= set(train_l["libraries"])
    # and the bars each read, one content hash per code, the same rows hashing the same
    assert set(train_l["bars"]) == {"synthetic/000001.SZ", "synthetic/600000.SH"}, train_l
    assert predict_l["bars"]["synthetic/000001.SZ"] == train_l["bars"]["synthetic/000001.SZ"]
    # and the model: saved by the training, loaded by the prediction, with one digest
    saved = train_l["models"][f"models/{model_id}"]
    loaded = predict_l["models"][f"models/{model_id}"]
    assert saved["role"] == "saved" and loaded["role"] == "loaded"
    assert saved["sha256"] == loaded["sha256"]
    # and a comparison names exactly what differs
    assert changed(train_l, train_l) == []
    other = {**train_l, "libraries": {**train_l["libraries"], "numpy": "0.0"}}
    assert changed(train_l, other) == ["libraries.numpy"]
    # and `raytasks show --lineage` prints each fingerprint; GET-style JSON carries it whole
    shown = _run(service, "show", predicted.id, "--lineage")
    assert shown.returncode == 0, shown.stderr
    assert f"sha256 {predict_l['code']}" in shown.stdout
    assert f"model      models/{model_id} loaded sha256 {saved['sha256']}" in shown.stdout
    assert "bars       synthetic/000001.SZ 2022-01-04..2022-12-30" in shown.stdout
    assert "--lineage" in _run(service, "show", predicted.id).stdout  # said, not dumped
