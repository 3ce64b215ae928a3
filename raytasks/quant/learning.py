"""Supervised learning on bar features: datasets, time-ordered splits, forecast quality,
and a versioned model registry. scikit-learn only; no Ray here."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..resources import MODEL_ID, MODEL_NAME
from .features import alpha158, forward_return


@dataclass
class Dataset:
    """Features ``x`` and label ``y`` (forward return over ``horizon``), indexed by
    (date, code) and sorted by date; ``latest`` holds the last date's features (no label)."""

    x: pd.DataFrame
    y: pd.Series
    latest: pd.DataFrame
    horizon: int


def build_dataset(bars: pd.DataFrame, horizon: int,
                  windows: tuple[int, ...] = (5, 10, 20, 30, 60)) -> Dataset:
    feats = alpha158(bars, windows)
    label = forward_return(bars, horizon)
    frame = feats.join(label).sort_index(level=["date", "code"])
    frame = frame.dropna(subset=list(feats.columns))
    last_date = frame.index.get_level_values("date").max()
    latest = frame.xs(last_date, level="date", drop_level=False)[feats.columns]
    labelled = frame.dropna(subset=[label.name])
    return Dataset(labelled[feats.columns], labelled[label.name], latest, horizon)


def time_split(index: pd.MultiIndex, test_fraction: float, gap: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Boolean train and test masks: test is the last ``test_fraction`` of the dates, and
    the ``gap`` dates before it are dropped so no training label overlaps the test period."""
    dates = np.array(sorted(set(index.get_level_values("date"))))
    n_test = max(1, int(len(dates) * test_fraction))
    test_start = dates[len(dates) - n_test]
    train_end = dates[max(0, len(dates) - n_test - gap - 1)]
    d = index.get_level_values("date")
    return np.asarray(d <= train_end), np.asarray(d >= test_start)


def walk_forward(index: pd.MultiIndex, n_splits: int, gap: int) -> list[tuple[np.ndarray,
                                                                              np.ndarray]]:
    """Expanding-window folds in time order, each with a ``gap`` before its test block."""
    dates = np.array(sorted(set(index.get_level_values("date"))))
    block = len(dates) // (n_splits + 1)
    d = index.get_level_values("date")
    folds = []
    for k in range(1, n_splits + 1):
        test_dates = dates[k * block:(k + 1) * block]
        train_end = dates[max(0, k * block - gap - 1)]
        folds.append((np.asarray(d <= train_end),
                      np.asarray((d >= test_dates[0]) & (d <= test_dates[-1]))))
    return folds


def regression_quality(y: np.ndarray, pred: np.ndarray, dates: pd.Index) -> dict[str, float]:
    """RMSE/MAE against the naive zero-return forecast, directional accuracy, IC, rank-IC."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    out = {
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "rmse_naive": float(np.sqrt(np.mean(y**2))),
        "mae": float(np.mean(np.abs(y - pred))),
        "mae_naive": float(np.mean(np.abs(y))),
        "directional_accuracy": float(np.mean(np.sign(pred) == np.sign(y))),
        "directional_accuracy_naive": float(np.mean(y > 0)),
        "n": len(y),
    }
    frame = pd.DataFrame({"y": y, "p": pred, "date": np.asarray(dates)})
    per_date = frame.groupby("date").filter(lambda g: len(g) >= 3)
    if len(per_date):  # cross-sectional IC when there are several stocks a day
        ics = per_date.groupby("date").apply(lambda g: g["y"].corr(g["p"]))
        rics = per_date.groupby("date").apply(
            lambda g: spearmanr(g["y"], g["p"]).statistic)
        out["ic"], out["rank_ic"] = float(ics.mean()), float(rics.mean())
    else:  # one stock: correlation over time
        out["ic"] = float(np.corrcoef(y, pred)[0, 1]) if np.std(pred) > 0 else 0.0
        out["rank_ic"] = float(spearmanr(y, pred).statistic) if np.std(pred) > 0 else 0.0
    return out


#: types the training tasks' estimators hold beyond those skops trusts by default
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
]
_FILE = "model.skops"


class ModelRegistry:
    """Versioned models: ``<root>/<name>/v<k>/model.skops`` beside ``meta.json``.

    A model id is ``"<name>:v<k>"``; prediction tasks load models by id. The
    registry loads only what it wrote itself: models are saved with ``skops.io``
    (a format that builds objects from an allow-list of types, never by running
    pickled code), the file's SHA-256 is recorded in ``meta.json`` at save time and
    checked before loading, and the id must match :data:`MODEL_ID` and resolve
    inside the root. A pickle dropped into the directory is never opened.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def _folder(self, name: str, version: str | None = None) -> Path:
        if not re.fullmatch(MODEL_NAME, name):
            raise ValueError(f"model name {name!r} must match {MODEL_NAME}")
        folder = self.root / name / version if version else self.root / name
        # the patterns already keep ids to one segment each; this also catches symlinks
        if not folder.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"model name {name!r} leaves the registry")
        return folder

    def save(self, name: str, model: Any, meta: dict[str, Any]) -> str:
        """Store ``model`` as the next version of ``name``; returns its id."""
        import skops.io as sio

        folder = self._folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        while True:  # two trainings of one name may race for a version: mkdir decides
            versions = [int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit()]
            version = max(versions, default=0) + 1
            target = folder / f"v{version}"
            try:
                target.mkdir()
                break
            except FileExistsError:
                continue
        blob = sio.dumps(model)
        untrusted = set(sio.get_untrusted_types(data=blob)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ValueError(f"model holds types the registry would refuse to load: "
                             f"{sorted(untrusted)}")
        (target / _FILE).write_bytes(blob)
        model_id = f"{name}:v{version}"
        meta = {**meta, "model_id": model_id, "created_at": time.time(), "format": "skops",
                "sha256": hashlib.sha256(blob).hexdigest()}
        (target / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        return model_id

    def load(self, model_id: str) -> tuple[Any, dict[str, Any]]:
        """The model ``model_id`` and its metadata.

        Raises:
            ValueError: a malformed id, no such model, or a file the registry did not write.
        """
        import skops.io as sio

        if not re.fullmatch(MODEL_ID, model_id):
            raise ValueError(f"model id {model_id!r} must look like name:v1 "
                             f"(pattern {MODEL_ID})")
        name, _, version = model_id.partition(":")
        target = self._folder(name, version)
        if not (target / "meta.json").is_file() or not (target / _FILE).is_file():
            raise ValueError(f"no model {model_id!r} in this registry")
        meta = json.loads((target / "meta.json").read_text())
        blob = (target / _FILE).read_bytes()
        if meta.get("format") != "skops" or \
                hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            raise ValueError(f"model {model_id!r} was not written by this registry "
                             "(its content hash does not match); refusing to load it")
        return sio.loads(blob, trusted=TRUSTED_TYPES), meta

    def list(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*/v*/meta.json"))]
