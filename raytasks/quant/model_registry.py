"""A versioned model registry on disk: what training tasks save and prediction tasks load.

Plain files and the standard library (``skops`` when saving or loading); no Ray here.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Protocol

#: a model's name: one path segment, never ``.`` or ``..``
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"
#: a model id, ``<name>:v<version>``
MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}:v\d{1,6}$"

#: types the training tasks' estimators hold beyond those skops trusts by default
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
]
_FILE = "model.skops"


class ModelLedger(Protocol):
    """Where a registry records the digest of each model version it saves, out of reach of
    whoever can write the registry's folder (raytasks' store, written under the training
    attempt's lease)."""

    def record(self, registry: str, model_id: str, sha256: str) -> None:
        """Record a saved version's digest. Raises ValueError if it may not (a lost lease)."""

    def digest(self, registry: str, model_id: str) -> str | None:
        """The digest recorded for a version, or None if none was."""


class ModelLineage(Protocol):
    """Where a task records the model versions it saved and loaded (its lineage)."""

    def model(self, registry: str, model_id: str, sha256: str, role: str) -> None: ...


class ModelRegistry:
    """Versioned models: ``<root>/<name>/v<k>/model.skops`` beside ``meta.json``.

    A model id is ``"<name>:v<k>"``; prediction tasks load models by id. The
    registry loads only what it wrote itself: models are saved with ``skops.io``
    (a format that builds objects from an allow-list of types, never by running
    pickled code), the file's SHA-256 is recorded at save time and checked before
    loading, and the id must match :data:`MODEL_ID` and resolve inside the root. A
    pickle dropped into the directory is never opened.

    With a ``ledger`` the digest lives there, not beside the file, so editing the file
    and its ``meta.json`` together is no forgery either; without one (the library used
    on its own) it is the one in ``meta.json``.
    """

    def __init__(self, root: str | Path, ledger: ModelLedger | None = None,
                 name: str = "", lineage: ModelLineage | None = None) -> None:
        self.root = Path(root).expanduser()
        self.ledger, self.name = ledger, name
        self.lineage = lineage  # a task's: each version saved or loaded is added

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
        digest = hashlib.sha256(blob).hexdigest()
        meta = {**meta, "model_id": model_id, "created_at": time.time(), "format": "skops",
                "sha256": digest}
        (target / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        if self.ledger is not None:  # last: a version not recorded is never loaded
            self.ledger.record(self.name, model_id, digest)
        if self.lineage is not None:
            self.lineage.model(self.name, model_id, digest, "saved")
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
        expected = meta.get("sha256") if self.ledger is None \
            else self.ledger.digest(self.name, model_id)
        if expected is None:
            raise ValueError(f"model {model_id!r} was never recorded by a training task "
                             "here; refusing to load it")
        if meta.get("format") != "skops" or hashlib.sha256(blob).hexdigest() != expected:
            raise ValueError(f"model {model_id!r} was not written by this registry "
                             "(its content hash does not match); refusing to load it")
        if self.lineage is not None:
            self.lineage.model(self.name, model_id, expected, "loaded")
        return sio.loads(blob, trusted=TRUSTED_TYPES), meta

    def file_digest(self, model_id: str) -> str | None:
        """The SHA-256 of version ``model_id``'s file as it is now (None: no such file)."""
        if not re.fullmatch(MODEL_ID, model_id):
            return None
        name, _, version = model_id.partition(":")
        path = self._folder(name, version) / _FILE
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    def list(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.root.glob("*/v*/meta.json"))]
