"""Named server resources, resolved for one owner: data sources, bar stores, model registries.

A task's parameters name a resource (``source="synthetic"``, ``store="market"``,
``registry="models"``); only the operator's settings (``Settings.resources``,
trusted) say where it is. Nothing here takes a path from a task.

Each owner reads and writes under its own root, ``<root>/owners/<owner>``, so one
owner can neither read nor overwrite another's bars or models. Tasks without an
owner come from trusted Ray clients and share ``<root>/shared``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .quant.model_registry import ModelLedger, ModelRegistry
from .settings import DataSourceSettings, ResourceSettings

if TYPE_CHECKING:
    import pandas as pd

    from .context import TaskExecutionContext
    from .lineage import Lineage
    from .quant.barstore import BarStore

ResourceKind = Literal["data_sources", "bar_stores", "model_registries"]

_LABEL = {"data_sources": "data source", "bar_stores": "bar store",
          "model_registries": "model registry"}
_SAFE_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class UnknownResourceError(ValueError):
    """A task named a resource the operator did not configure."""

    def __init__(self, kind: ResourceKind, name: str, known: list[str]) -> None:
        super().__init__(f"no {_LABEL[kind]} named {name!r}; the operator configures them in "
                         f"settings resources.{kind} (known: {', '.join(sorted(known))})")


def owner_dir(owner: str | None) -> Path:
    """The relative directory of an owner's files under a resource root.

    An owner name that is not a plain path segment (the operator chose it, but it
    could still hold ``/`` or ``..``) is replaced by its digest; ``~`` never occurs
    in a plain name, so the two forms cannot collide.
    """
    if owner is None:
        return Path("shared")
    if _SAFE_OWNER.match(owner):
        return Path("owners") / owner
    return Path("owners") / ("~" + hashlib.sha256(owner.encode()).hexdigest()[:32])


def model_key(owner: str | None, registry: str, model_id: str) -> str:
    """Where the store keeps a model version's digest: one per owner, registry and id."""
    return f"{owner_dir(owner).as_posix()}/{registry}/{model_id}"


@dataclass(frozen=True)
class Resources:
    """The operator's named resources as one owner sees them (picklable: ships to Ray tasks)."""

    settings: ResourceSettings
    owner: str | None = None
    #: where model digests are recorded (the task's attempt, in the store); None: beside
    #: the models (the library used outside a task)
    models: ModelLedger | None = None
    #: the task's lineage, which every read adds its fingerprints to (None: not recorded)
    lineage: Lineage | None = None

    @classmethod
    def of(cls, ctx: TaskExecutionContext) -> Resources:
        """The resources of the task ``ctx`` runs, from the operator's settings."""
        if ctx.settings is None:
            raise RuntimeError("this task context carries no settings to resolve resources")
        return cls(ctx.settings.resources, ctx.owner, ctx.models, ctx.lineage)

    def _root(self, kind: ResourceKind, name: str) -> Path:
        roots: dict[str, Path] = getattr(self.settings, kind)
        if name not in roots:
            raise UnknownResourceError(kind, name, list(roots))
        return Path(roots[name]).expanduser() / owner_dir(self.owner)

    def data_source(self, name: str) -> DataSourceSettings:
        if name not in self.settings.data_sources:
            raise UnknownResourceError("data_sources", name, list(self.settings.data_sources))
        return self.settings.data_sources[name]

    def bar_store(self, name: str) -> BarStore:
        """The owner's part of the bar store ``name``."""
        from .quant.barstore import BarStore

        return BarStore(self._root("bar_stores", name))

    def model_registry(self, name: str) -> ModelRegistry:
        """The owner's part of the model registry ``name``."""
        return ModelRegistry(self._root("model_registries", name), self.models, name,
                             self.lineage)

    def load_bars(self, source: str, codes: list[str], start: str, end: str,
                  seed: int = 7) -> pd.DataFrame:
        """Bars of ``codes`` from the data source ``source`` (read-only for every kind),
        their content hashes added to the task's lineage."""
        bars = self._load_bars(source, codes, start, end, seed)
        if self.lineage is not None:
            self.lineage.bars(source, bars, start, end)
        return bars

    def _load_bars(self, source: str, codes: list[str], start: str, end: str,
                   seed: int) -> pd.DataFrame:
        import pandas as pd

        from .quant import adapters
        from .quant.data import load_bars

        spec = self.data_source(source)
        if spec.kind in ("synthetic", "csv"):
            return load_bars(codes, start, end, spec.kind,
                             str(spec.path) if spec.path is not None else None, seed)
        if spec.kind == "qlib":
            from .quant.qlib_source import load_qlib_bars

            assert spec.path is not None
            return load_qlib_bars(spec.path, codes, start, end)
        frames = []
        for code in codes:
            if spec.kind == "tushare":
                assert spec.token is not None
                frames.append(adapters.fetch_tushare(code, start, end,
                                                     spec.token.get_secret_value()))
            elif spec.kind == "akshare":
                frames.append(adapters.fetch_akshare(code, start, end))
            else:
                frames.append(adapters.fetch_baostock(code, start, end))
        return pd.concat(frames, ignore_index=True)

    def check(self, refs: dict[str, tuple[ResourceKind, str]]) -> list[dict[str, str]]:
        """Errors (``{"field", "reason"}``) for every reference to an unknown resource."""
        errors = []
        for field, (kind, name) in refs.items():
            if name not in getattr(self.settings, kind):
                errors.append({"field": field, "reason": str(UnknownResourceError(
                    kind, name, list(getattr(self.settings, kind))))})
        return errors


def resource_refs(params: Any) -> dict[str, tuple[ResourceKind, str]]:
    """The resources a parameter model names, by field (empty for models that name none)."""
    refs = getattr(params, "resource_refs", None)
    return dict(refs()) if callable(refs) else {}
