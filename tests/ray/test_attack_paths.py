"""Issue 7, rows "run code on the cluster" and "read and write server paths", attacked
over HTTP: parameters cannot name a file, the registry never unpickles, and one owner's
bars and models are out of another's reach."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import httpx
import pytest

from raytasks.settings import TaskTypeSettings
from tests.conftest import wait_for
from tests.httpserver import auth

RANGE = {"start": "2022-01-04", "end": "2023-12-29"}


class Planted:
    """What the attacker pickles: loading it creates ``marker`` (it never may)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def quant_api(make_api: Any) -> Any:
    return make_api(task_types={t: TaskTypeSettings(workers=1) for t in
                                ("prediction", "backtest", "training", "data")})


def _create(c: httpx.Client, task_type: str, **parameters: Any) -> str:
    """Create a task; its id."""
    r = c.post("/tasks", json={"name": "t", "task_type": task_type, "parameters": parameters})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _finished(c: httpx.Client, task_id: str) -> dict[str, Any]:
    """The task, once it has finished."""
    return dict(wait_for(lambda: (t := c.get(f"/tasks/{task_id}").json())["status"]
                         in ("COMPLETED", "FAILED", "CANCELLED") and t, timeout_s=180,
                         what=f"task {task_id} to finish"))


def _run(c: httpx.Client, task_type: str, **parameters: Any) -> dict[str, Any]:
    """Create a task and wait until it has finished; the task."""
    return _finished(c, _create(c, task_type, **parameters))


def _refused(c: httpx.Client, task_type: str, field: str, **parameters: Any) -> str:
    r = c.post("/tasks", json={"name": "t", "task_type": task_type, "parameters": parameters})
    assert r.status_code == 422, (parameters, r.text)
    fields = {e["field"]: e["reason"] for e in r.json()["errors"]}
    assert field in fields, fields
    return fields[field]


def test_parameters_cannot_name_a_model_file_or_a_registry_path(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url, headers=auth("alice")) as alice:
        for model_id in ("/tmp/evil.joblib", "../../../tmp/evil:v1", "evil/x:v1"):
            _refused(alice, "prediction", "parameters.model_id", stock_code="000001.SZ",
                     model_id=model_id)
            _refused(alice, "backtest", "parameters.model_id", strategy="model",
                     model_id=model_id)
            _refused(alice, "training", "parameters.model_id", kind="online",
                     model_id=model_id)
        _refused(alice, "prediction", "parameters.registry_path", stock_code="000001.SZ",
                 model_id="evil:v1", registry_path="/tmp")


def test_a_pickle_planted_in_the_registry_never_runs(quant_api: Any, tmp_path: Path) -> None:
    # Given pickles in alice's part of the registry: the old layout, and one dressed up as
    # a registry model with a matching hash
    root = quant_api.service.settings.resources.model_registries["models"] / "owners" / "alice"
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Planted(marker))
    for name, filename, meta in (
            ("old", "model.joblib", {"windows": [5], "features": []}),
            ("forged", "model.skops", {"format": "skops", "windows": [5], "features": [],
                                       "sha256": hashlib.sha256(blob).hexdigest()})):
        (root / name / "v1").mkdir(parents=True)
        (root / name / "v1" / filename).write_bytes(blob)
        (root / name / "v1" / "meta.json").write_text(json.dumps(meta))
    with httpx.Client(base_url=quant_api.url, headers=auth("alice")) as alice:
        # When alice asks each route that loads a model to load them (all at once: the
        # three families' executors work side by side)
        asked = [(task_type, model_id, _create(alice, task_type, model_id=model_id, **params,
                                               **RANGE))
                 for model_id in ("old:v1", "forged:v1")
                 for task_type, params in (
                     ("prediction", {"stock_code": "000001.SZ"}),
                     ("backtest", {"strategy": "model", "stock_code": "000001.SZ"}),
                     ("training", {"kind": "online", "codes": ["000001.SZ"]}))]
        for task_type, model_id, task_id in asked:
            done = _finished(alice, task_id)
            # Then the task fails, saying why, and the pickle never ran
            assert done["status"] == "FAILED", (task_type, model_id)
            assert done["error"]["traceback"] is None
    assert not marker.exists()


def test_one_owners_models_are_out_of_anothers_reach(quant_api: Any) -> None:
    with httpx.Client(base_url=quant_api.url, headers=auth("alice")) as alice, \
            httpx.Client(base_url=quant_api.url, headers=auth("bob")) as bob:
        trained = _run(alice, "training", kind="train", name="mine", codes=["000001.SZ"],
                       windows=[5, 20], **RANGE)
        assert trained["status"] == "COMPLETED" and trained["result"]["model_id"] == "mine:v1"
        ok = _run(alice, "prediction", stock_code="000001.SZ", model_id="mine:v1", **RANGE)
        assert ok["status"] == "COMPLETED" and ok["result"]["model_id"] == "mine:v1"
        # bob names alice's model: there is no such model in his registry
        theirs = _run(bob, "prediction", stock_code="000001.SZ", model_id="mine:v1", **RANGE)
        assert theirs["status"] == "FAILED"
        assert "no model 'mine:v1' in this registry" in theirs["error"]["message"]


def test_a_model_rewritten_with_its_sidecar_is_refused(quant_api: Any) -> None:
    import skops.io as sio
    from sklearn.linear_model import Ridge

    root = quant_api.service.settings.resources.model_registries["models"] / "owners" / "alice"
    with httpx.Client(base_url=quant_api.url, headers=auth("alice")) as alice:
        # Given a model alice trained, and its forecast
        trained = _run(alice, "training", kind="train", name="mine", codes=["000001.SZ"],
                       windows=[5, 20], **RANGE)
        assert trained["status"] == "COMPLETED", trained
        honest = _run(alice, "prediction", stock_code="000001.SZ", model_id="mine:v1", **RANGE)
        assert honest["status"] == "COMPLETED", honest
        # When whoever can write the registry's folder swaps the model for another valid
        # one and rewrites meta.json to match (the sidecar says what the file's hash is)
        folder = root / "mine" / "v1"
        features = json.loads((folder / "meta.json").read_text())["features"]
        forged = Ridge(alpha=1e-9).fit([[0.0] * len(features)] * 2, [0.5, 0.5])  # always +50%
        blob = sio.dumps(forged)
        (folder / "model.skops").write_bytes(blob)
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta,
                                                      "sha256": hashlib.sha256(blob).hexdigest()}))
        # Then a task that loads it refuses: the digest it checks lives in the store,
        # recorded by the training attempt that held the lease
        refused = _run(alice, "prediction", stock_code="000001.SZ", model_id="mine:v1",
                       **RANGE)
        assert refused["status"] == "FAILED", refused.get("result")
        assert "content hash does not match" in refused["error"]["message"]


def test_parameters_cannot_name_a_server_path(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url, headers=auth("alice")) as alice:
        _refused(alice, "prediction", "parameters.data_path", stock_code="000001.SZ",
                 source="csv", data_path="/etc")
        _refused(alice, "data", "parameters.store_path", store_path="/tmp/anywhere")
        _refused(alice, "data", "parameters.token", source="tushare", token="t")
        assert "pattern" in _refused(alice, "training", "parameters.name", name="..")
        _refused(alice, "training", "parameters.name", name="../../x")
        _refused(alice, "data", "parameters.store", store="../../tmp")
        # a name the operator did not configure is refused, naming the ones there are
        reason = _refused(alice, "backtest", "parameters.source", source="csv")
        assert "no data source named 'csv'" in reason and "synthetic" in reason
        reason = _refused(alice, "data", "parameters.store", store="elsewhere")
        assert "market" in reason and "/" not in reason


def test_one_owners_bars_are_out_of_anothers_reach(quant_api: Any) -> None:
    codes = ["000001.SZ", "600000.SH"]
    with httpx.Client(base_url=quant_api.url, headers=auth("alice")) as alice, \
            httpx.Client(base_url=quant_api.url, headers=auth("bob")) as bob:
        # Given alice's bars in the default market store
        synced = _run(alice, "data", kind="sync", codes=codes, **RANGE)
        assert synced["status"] == "COMPLETED", synced["error"]
        assert synced["result"]["rows_written"] > 0
        assert synced["result"]["store"] == "market"  # a name, never a server path
        before = _run(alice, "data", kind="validate", codes=codes, **RANGE)["result"]
        # When bob reads and "cleans" the same store and codes
        for kind in ("validate", "clean", "features"):
            done = _run(bob, "data", kind=kind, codes=codes, **RANGE)
            # Then he finds no bars: his part of the store is his own
            assert done["status"] == "FAILED" and "no stored bars" in done["error"]["message"]
        # And when he syncs other dates, alice's bars are as they were
        _run(bob, "data", kind="sync", codes=codes, start="2020-01-02", end="2020-12-31")
        after = _run(alice, "data", kind="validate", codes=codes, **RANGE)["result"]
        assert after == before
        feats = _run(alice, "data", kind="features", codes=codes, windows=[5], **RANGE)
        assert feats["result"]["artifact"] == "features.parquet"
        assert "path" not in feats["result"]
