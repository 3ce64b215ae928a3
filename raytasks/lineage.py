"""Lineage: what a task's result came from, recorded where it happens.

An attempt's :class:`Lineage` starts with what the executor knows before the handler runs:
raytasks' version, a hash of the handler's source, the parameters after their defaults,
the seeds among them, and the versions of the numeric libraries. The handler's reads add
the rest as they happen (no second read of anything): each data source read adds a
content hash per code and date range (:meth:`Lineage.bars`), each model loaded or saved its
version and SHA-256 (:meth:`Lineage.model`). The completed attempt's report carries it;
the task keeps it beside its result (``Task.lineage``), and a re-run compares against it
(:func:`changed`).

What every task of a type shares on one install (raytasks' version, the code's hash, the
libraries': :data:`ENVIRONMENT`, ~250 of a no-op's ~320 bytes) is stored once, by digest
(:func:`environment`); a task's row keeps its own part and that digest (:meth:`Lineage.text`),
and the store puts the two together again when it reads the task (:func:`whole`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .registry import TaskTypeSpec

#: The numeric libraries a result depends on, whose versions every lineage records.
LIBRARIES = ("numpy", "pandas", "scikit-learn", "scipy", "numba", "statsmodels", "arch",
             "skops")
#: The package's modules whose source makes a built-in type's code: its handlers and the
#: quant library they compute with.
BUILTIN_CODE = ("handlers", "quant")
#: A lineage's keys that every task of a type shares on one install: its environment.
ENVIRONMENT = ("raytasks", "code", "libraries")


class Lineage(dict[str, Any]):
    """One attempt's lineage, a JSON-able dict: ``raytasks``, ``code``, ``parameters``,
    ``seeds``, ``libraries``, ``bars`` and ``models``."""

    @classmethod
    def start(cls, spec: TaskTypeSpec, parsed: Any) -> Lineage:
        """What is known before the handler runs; ``parsed``: its argument
        (:meth:`TaskTypeSpec.parse`), whose fields are the parameters after defaults."""
        from pydantic import BaseModel

        from . import __version__

        after_defaults = parsed.model_dump(mode="json") if isinstance(parsed, BaseModel) \
            else parsed
        out = cls(raytasks=__version__, code=code_digest(spec),
                  parameters=after_defaults, seeds=_seeds(after_defaults),
                  libraries=library_versions())
        out["bars"], out["models"] = {}, {}
        return out

    def bars(self, source: str, frame: pd.DataFrame, start: str, end: str) -> None:
        """Bars read from ``source``: a content hash of each code's rows."""
        if frame is None or frame.empty or "code" not in frame:
            return
        read = self.setdefault("bars", {})
        for code, rows in frame.groupby("code", sort=True):
            read[f"{source}/{code}"] = {"start": start, "end": end, "rows": len(rows),
                                        "sha256": frame_digest(rows)}

    def model(self, registry: str, model_id: str, sha256: str, role: str) -> None:
        """A model version ``role`` ("loaded" or "saved") by the attempt."""
        self.setdefault("models", {})[f"{registry}/{model_id}"] = {"sha256": sha256, "role": role}

    def text(self) -> str:
        """The task's own part, JSON: all but :data:`ENVIRONMENT`'s keys, with the digest
        of its environment (``environment``)."""
        own = {k: v for k, v in self.items() if k not in ENVIRONMENT}
        own["environment"] = self.environment()[0]
        return json.dumps(own, sort_keys=True, separators=(",", ":"), default=str)

    def environment(self) -> tuple[str, str]:
        """(digest, JSON text) of its :data:`ENVIRONMENT` part (:func:`environment`)."""
        return environment(self["raytasks"], self["code"])


@functools.lru_cache(maxsize=256)
def environment(version: str, code: str) -> tuple[str, str]:
    """(SHA-256, JSON text) of an environment: raytasks ``version``, the ``code``'s hash
    and this process's :func:`library_versions`."""
    text = json.dumps({"raytasks": version, "code": code, "libraries": library_versions()},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest(), text


def own(lineage: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a task's row keeps of a whole lineage: all but the environment it names."""
    if not lineage or "environment" not in lineage:
        return lineage
    return {k: v for k, v in lineage.items() if k not in ENVIRONMENT}


def whole(lineage: dict[str, Any], environments: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """A stored lineage with its environment's keys back (from ``environments``, by
    digest); one stored whole (before environments were kept apart) as it is."""
    digest = lineage.get("environment")
    if digest is None or digest not in environments:
        return lineage
    return {**environments[digest], **lineage}


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content (its columns, by name, and its rows, in order): the
    same rows give the same digest in any process."""
    import pandas as pd

    ordered = frame.reset_index(drop=True)
    ordered = ordered[sorted(ordered.columns)]
    digest = hashlib.sha256(",".join(map(str, ordered.columns)).encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def code_digest(spec: TaskTypeSpec) -> str:
    """A hash of the code that runs ``spec``: for a built-in type, the package's handlers
    and quant library; for a registered one, its handler's source (its pickled form when
    the source cannot be read)."""
    if spec.builtin:
        return builtin_digest()
    try:
        return _handler_digest(spec.handler)
    except TypeError:  # an unhashable callable: not remembered
        return _handler_digest.__wrapped__(spec.handler)


@functools.lru_cache(maxsize=256)
def _handler_digest(handler: Any) -> str:
    try:
        source = inspect.getsource(handler).encode()
    except (OSError, TypeError):
        import cloudpickle

        source = cloudpickle.dumps(handler)
    return hashlib.sha256(source).hexdigest()


@functools.cache
def builtin_digest() -> str:
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for part in BUILTIN_CODE:
        for path in sorted((root / part).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def library_versions() -> dict[str, str]:
    """Python's version and each installed library of :data:`LIBRARIES`'s."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _seeds(parameters: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in parameters.items() if "seed" in k.lower()}


def changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """Which fingerprints differ between two lineages: ``code``, ``raytasks``,
    ``parameters``, ``libraries.<name>``, ``bars.<source/code>``, ``models.<id>`` (of
    the models loaded)."""
    if not before or not after:
        return [] if before == after else ["lineage"]
    out = [key for key in ("raytasks", "code", "parameters", "seeds")
           if before.get(key) != after.get(key)]
    for section in ("libraries", "bars", "models"):
        mine, theirs = before.get(section) or {}, after.get(section) or {}
        if section == "models":  # the inputs: a version saved is an output
            mine, theirs = _loaded(mine), _loaded(theirs)
        out += [f"{section}.{name}" for name in sorted(set(mine) | set(theirs))
                if mine.get(name) != theirs.get(name)]
    return out


def _loaded(models: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in models.items() if v.get("role") == "loaded"}


def describe(lineage: dict[str, Any]) -> list[str]:
    """A lineage for people: one line per fingerprint (``raytasks show ID --lineage``)."""
    libs = ", ".join(f"{k} {v}" for k, v in sorted((lineage.get("libraries") or {}).items()))
    out = [f"raytasks   {lineage.get('raytasks')}",
           f"code       sha256 {lineage.get('code')}",
           "parameters " + json.dumps(lineage.get("parameters"), sort_keys=True,
                                      ensure_ascii=False),
           "seeds      " + json.dumps(lineage.get("seeds") or {}, sort_keys=True),
           f"libraries  {libs}"]
    for name, read in sorted((lineage.get("bars") or {}).items()):
        out.append(f"bars       {name} {read.get('start')}..{read.get('end')} "
                   f"{read.get('rows')} rows sha256 {read.get('sha256')}")
    for name, used in sorted((lineage.get("models") or {}).items()):
        out.append(f"model      {name} {used.get('role')} sha256 {used.get('sha256')}")
    return out
