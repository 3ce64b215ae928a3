"""The result cache: a task whose inputs equal a finished task's takes its result.

Opt-in, per task (``cache: true``) or per type (``types.<name>.cache``). A task that
takes cached results carries a **key**, the SHA-256 of its type, its code (the
handler's, or the built-in package's: :func:`raytasks.lineage.code_digest`) and its
parameters after their defaults. When it is submitted, the manager looks up the latest
COMPLETED task of its owner under that key (any owner's only with the admin setting
``cache_across_owners``) and checks the inputs that task's lineage recorded against what
they are now (:func:`unchanged`): the library versions, each code's bars read (read again
and hashed, the way the attempt hashed them), each model version's file. All equal: the
new task completes at once with that result, ``cached_from`` naming it, and no executor
runs. Anything else is a miss, and the task runs (and serves later ones).

A change of code is a new key; a change of data or model is a failed check. The
synthetic source is the one input not read again: its bars are a function of the code
and the parameters, both in the key. A result kept as a file (over
``inline_result_max_bytes``) belongs to its attempt and is not shared.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .lineage import Lineage, code_digest, library_versions
from .resources import Resources, owner_dir

if TYPE_CHECKING:
    from .models import Task
    from .registry import TaskTypeSpec
    from .settings import Settings

#: the most candidates under one key whose inputs are checked (newest first)
CANDIDATES = 3
#: where a data source's bars are read from a bar store (``Lineage.bars``' source name)
STORE_PREFIX = "store:"


def cache_key(spec: TaskTypeSpec, parameters: dict[str, Any]) -> str:
    """The key of a task of ``spec`` with ``parameters`` (after their defaults)."""
    text = json.dumps([spec.name, code_digest(spec), parameters], sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir(settings: Settings, owner: str | None) -> Path:
    """Where a task of ``owner`` keeps parts of results for reuse (the sweep's rows)."""
    return settings.data_dir.expanduser() / "cache" / owner_dir(owner)


def unchanged(lineage: dict[str, Any] | None, settings: Settings,
              owner: str | None) -> bool:
    """Whether every input ``lineage`` recorded is as it was: the libraries, each code's
    bars and each model version. A read that fails is a change."""
    if not lineage or lineage.get("libraries") != library_versions():
        return False
    resources = Resources(settings.resources, owner)
    try:
        return _bars_unchanged(lineage.get("bars") or {}, resources) \
            and _models_unchanged(lineage.get("models") or {}, resources)
    except Exception:  # a source or file that cannot be read is a miss
        return False


def _bars_unchanged(recorded: dict[str, dict[str, Any]], resources: Resources) -> bool:
    reads: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for name, read in recorded.items():
        source, _, code = name.rpartition("/")
        if source.startswith(STORE_PREFIX) or resources.data_source(source).kind != "synthetic":
            reads[(source, read["start"], read["end"])].append(code)
        # else: a function of the code and the parameters, both in the key: not read again
    now = Lineage()
    for (source, start, end), codes in reads.items():
        if source.startswith(STORE_PREFIX):
            frame = resources.bar_store(source.removeprefix(STORE_PREFIX)).read(
                sorted(codes), start, end)
        else:
            frame = resources.load_bars(source, sorted(codes), start, end)
        now.bars(source, frame, start, end)
    return all(now.get("bars", {}).get(f"{source}/{code}") == recorded[f"{source}/{code}"]
               for (source, _start, _end), codes in reads.items() for code in codes)


def _models_unchanged(recorded: dict[str, dict[str, Any]], resources: Resources) -> bool:
    for name, used in recorded.items():
        registry, _, model_id = name.partition("/")
        if resources.model_registry(registry).file_digest(model_id) != used.get("sha256"):
            return False
    return True


def hit(candidates: list[Task], settings: Settings, owner: str | None) -> Task | None:
    """The newest of ``candidates`` (COMPLETED under one key, newest first, at most
    :data:`CANDIDATES`) whose inputs are unchanged."""
    for task in candidates:
        if task.result_uri is None and unchanged(task.lineage, settings, owner):
            return task
    return None
