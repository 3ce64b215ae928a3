"""Named resources and the model registry: no task parameter reaches a path, no file runs."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.ensemble import StackingRegressor, VotingRegressor
from sklearn.linear_model import Ridge, SGDRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from raytasks.handlers.training import estimator
from raytasks.quant.model_registry import ModelRegistry
from raytasks.quant.synthetic import generate_bars
from raytasks.resources import Resources, UnknownResourceError, owner_dir
from raytasks.settings import DataSourceSettings, ResourceSettings, Settings


class Planted:
    """What an attacker would pickle: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def test_builtin_names_default_under_the_data_dir(settings: Settings, tmp_path: Path) -> None:
    res = settings.resources
    assert res.bar_stores["market"] == tmp_path / "data" / "market"
    assert res.model_registries["models"] == tmp_path / "data" / "models"
    assert res.data_sources["synthetic"].kind == "synthetic"
    with pytest.raises(ValueError, match="csv data source needs a path"):
        DataSourceSettings(kind="csv")
    with pytest.raises(ValueError, match="tushare data source needs a token"):
        DataSourceSettings(kind="tushare")


def test_each_owner_has_its_own_root_and_odd_names_become_digests() -> None:
    assert owner_dir(None) == Path("shared")
    assert owner_dir("alice") == Path("owners/alice")
    for odd in ("..", "../root", "a/b", "", "x" * 100):
        assert owner_dir(odd).parent == Path("owners")
        assert owner_dir(odd).name.startswith("~") and "/" not in owner_dir(odd).name


def test_one_owners_bars_are_invisible_to_another(settings: Settings) -> None:
    alice = Resources(settings.resources, "alice").bar_store("market")
    bob = Resources(settings.resources, "bob").bar_store("market")
    shared = Resources(settings.resources, None).bar_store("market")
    alice.write(generate_bars(["000001.SZ"], "2023-01-01", "2023-03-31"))
    assert len(alice.read(["000001.SZ"])) > 0
    assert bob.read(["000001.SZ"]).empty and shared.read(["000001.SZ"]).empty
    assert bob.codes() == [] and alice.codes() == ["000001.SZ"]


def test_unknown_names_are_refused_without_revealing_paths(settings: Settings) -> None:
    res = Resources(settings.resources, "alice")
    with pytest.raises(UnknownResourceError, match="no bar store named 'elsewhere'") as err:
        res.bar_store("elsewhere")
    assert str(settings.data_dir) not in str(err.value) and "market" in str(err.value)
    with pytest.raises(UnknownResourceError, match="no data source named 'csv'"):
        res.load_bars("csv", ["000001.SZ"], "2023-01-01", "2023-02-01")
    errors = res.check({"parameters.source": ("data_sources", "nope"),
                        "parameters.registry": ("model_registries", "models")})
    assert [e["field"] for e in errors] == ["parameters.source"]


def test_a_csv_source_reads_only_its_directory(tmp_path: Path) -> None:
    from raytasks.quant.data import save_csv

    save_csv(generate_bars(["600000.SH"], "2023-01-01", "2023-06-30"), tmp_path / "csv")
    res = Resources(ResourceSettings(data_sources={"csv": DataSourceSettings(
        kind="csv", path=tmp_path / "csv")}).with_defaults(tmp_path), "alice")
    bars = res.load_bars("csv", ["600000.SH"], "2023-01-01", "2023-06-30")
    assert set(bars["code"]) == {"600000.SH"} and len(bars) > 100
    with pytest.raises(ValueError, match=r"no 000001\.SZ\.csv") as err:
        res.load_bars("csv", ["000001.SZ"], "2023-01-01", "2023-06-30")
    assert str(tmp_path) not in str(err.value)


def _fitted_models() -> dict[str, Any]:
    """One of each kind of estimator the training tasks register."""
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    y = pd.Series(rng.normal(size=120))
    members = [("ridge", estimator("ridge")),
               ("forest", estimator("random_forest", n_estimators=3)),
               ("gbrt", estimator("gbrt", max_iter=3))]
    fitted = [(n, clone(m).fit(x, y)) for n, m in members]
    return {
        **{n: m for n, m in fitted},
        "voting": VotingRegressor(members).fit(x, y),
        "stacking": StackingRegressor(fitted, final_estimator=Ridge(), cv="prefit").fit(x, y),
        "online": make_pipeline(StandardScaler(), SGDRegressor(random_state=0)).fit(x, y),
        "x": x,
    }


def test_every_kind_of_trained_model_round_trips(tmp_path: Path) -> None:
    models = _fitted_models()
    x = models.pop("x")
    registry = ModelRegistry(tmp_path)
    for name, model in models.items():
        model_id = registry.save(name, model, {"windows": [5]})
        loaded, meta = registry.load(model_id)
        assert np.allclose(loaded.predict(x), model.predict(x)), name
        assert meta["format"] == "skops" and meta["model_id"] == f"{name}:v1"


@pytest.mark.parametrize("model_id", ["/etc/passwd", "../../x:v1", "a/b:v1", "..:v1",
                                      "x:v1/../../y", "x:v1\n", "x:1", "x"])
def test_model_ids_outside_the_pattern_are_refused(tmp_path: Path, model_id: str) -> None:
    with pytest.raises(ValueError, match="must look like name:v1"):
        ModelRegistry(tmp_path).load(model_id)


def test_names_cannot_leave_the_registry(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    for name in ("..", ".", "../up", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="must match"):
            registry.save(name, Ridge(), {})
    (tmp_path / "reg").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "reg" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="leaves the registry"):
        registry.save("link", Ridge(), {})
    assert not list((tmp_path / "outside").iterdir())


def test_a_pickle_dropped_into_the_registry_never_runs(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Planted(marker))
    # Given the old layout: a pickle beside a meta.json, no hash
    old = tmp_path / "old" / "v1"
    old.mkdir(parents=True)
    (old / "model.joblib").write_bytes(blob)
    (old / "meta.json").write_text(json.dumps({"model_id": "old:v1", "windows": [5]}))
    # And a registry model whose file was swapped for the pickle
    good = registry.save("good", Ridge().fit([[0], [1]], [0, 1]), {})
    (tmp_path / "good" / "v1" / "model.skops").write_bytes(blob)
    # And a forger who rewrote both the file and the recorded hash
    forged = tmp_path / "forged" / "v1"
    forged.mkdir(parents=True)
    (forged / "model.skops").write_bytes(blob)
    (forged / "meta.json").write_text(json.dumps({
        "format": "skops", "sha256": hashlib.sha256(blob).hexdigest()}))
    # When each is loaded, Then each is refused and nothing ran
    with pytest.raises(ValueError, match="no model 'old:v1'"):
        registry.load("old:v1")
    with pytest.raises(ValueError, match="was not written by this registry"):
        registry.load(good)
    with pytest.raises(Exception):  # noqa: B017 - skops refuses it as not a skops file
        registry.load("forged:v1")
    assert not marker.exists()


def test_a_skops_file_with_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    import skops.io as sio

    registry = ModelRegistry(tmp_path)
    marker = tmp_path / "pwned"
    blob = sio.dumps({"model": Planted(marker)})
    target = tmp_path / "evil" / "v1"
    target.mkdir(parents=True)
    (target / "model.skops").write_bytes(blob)
    (target / "meta.json").write_text(json.dumps({
        "format": "skops", "sha256": hashlib.sha256(blob).hexdigest()}))
    with pytest.raises(Exception, match=r"[Uu]ntrusted"):
        registry.load("evil:v1")
    assert not marker.exists()
