"""Task types: a handler, its parameter model and its defaults.

The TaskManager holds the authoritative :class:`TaskTypeRegistry` (built-ins
plus types registered by clients, persisted in the store); executors fetch a
type's spec from it by name. Handlers travel as cloudpickle bytes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle
from pydantic import BaseModel, ValidationError

from .errors import InvalidParametersError, PayloadTooLargeError, UnknownTaskTypeError
from .models import TaskTypeInfo

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class TaskTypeSpec:
    name: str
    handler: Handler
    params_model: type[BaseModel] | None = None
    timeout_s: float | None = None
    max_retries: int | None = None
    max_concurrency: int | None = None
    #: the scheduler may preempt its running tasks for a deadline (the handler should
    #: checkpoint: ``ctx.save_checkpoint``, and stop at ``ctx.check_preempted``)
    preemptible: bool = False
    preempt_grace_s: float | None = None  # None: the settings' preempt_grace_s
    #: what an executor of this type runs once when it starts, before its first task (a
    #: warm executor is then ready: its handler's imports done)
    warm_up: Callable[[], object] | None = None
    #: how far a re-run's numbers may differ from the original's and still reproduce it
    #: (relative, and absolute near zero; 0: exactly), and the result fields a re-run
    #: legitimately changes (a new model version's id)
    tolerance: float = 0.0
    volatile: tuple[str, ...] = ()
    builtin: bool = False
    placeholder: bool = False
    version: int = 0

    def parse(self, parameters: dict[str, Any]) -> Any:
        """The handler's argument: the parameter model instance, or the dict itself."""
        if self.params_model is None:
            return parameters
        return self.params_model.model_validate(parameters)

    def work_units(self, parameters: dict[str, Any]) -> int:
        """How much work the parameters ask for, if the model says (``work_units()``), else 1.

        Owners' ``max_work_units`` quota is checked against it.
        """
        if self.params_model is None or not hasattr(self.params_model, "work_units"):
            return 1
        return int(self.params_model.model_validate(parameters).work_units())

    def info(self) -> TaskTypeInfo:
        return TaskTypeInfo(
            name=self.name,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries if self.max_retries is not None else -1,
            max_concurrency=self.max_concurrency,
            preemptible=self.preemptible,
            tolerance=self.tolerance,
            volatile=list(self.volatile),
            builtin=self.builtin,
            placeholder=self.placeholder,
            version=self.version,
        )

    def dumps(self) -> bytes:
        for obj in (self.handler, self.params_model):
            _ship_module_by_value(obj)
        return bytes(cloudpickle.dumps(self))

    @staticmethod
    def loads(blob: bytes) -> TaskTypeSpec:
        spec = cloudpickle.loads(blob)
        assert isinstance(spec, TaskTypeSpec)
        return spec


def _ship_module_by_value(obj: Any) -> None:
    """Pickle a handler's own module by value unless it is installed (workers import it).

    A researcher's script, notebook or test module is not importable on the
    cluster's workers; an installed package (raytasks included) is.
    """
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None or module.__name__ in ("__main__", "builtins"):
        return
    path = getattr(module, "__file__", None) or ""
    if module.__name__.split(".")[0] == "raytasks" or "-packages" in path or not path:
        return
    cloudpickle.register_pickle_by_value(module)


def validate_parameters(
    spec: TaskTypeSpec, parameters: dict[str, Any], max_bytes: int
) -> dict[str, Any]:
    """Check size and the type's model; return the normalised parameters (JSON-ready).

    Raises:
        PayloadTooLargeError: the JSON form is larger than ``max_bytes``.
        InvalidParametersError: the model refused them; each error names the field.
    """
    try:
        size = len(json.dumps(parameters, default=str).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidParametersError(
            [{"field": "parameters", "reason": f"not JSON-serialisable: {exc}"}]
        ) from None
    if size > max_bytes:
        raise PayloadTooLargeError("parameters", size, max_bytes)
    if spec.params_model is None:
        return parameters
    try:
        model = spec.params_model.model_validate(parameters)
    except ValidationError as exc:
        raise InvalidParametersError(validation_errors(exc, prefix="parameters")) from None
    dumped: dict[str, Any] = model.model_dump(mode="json")
    return dumped


def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "reason"}`` rows with dotted field paths."""
    rows = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        field = ".".join(p for p in (prefix, loc) if p)
        rows.append({"field": field or "(root)", "reason": err["msg"]})
    return rows


class TaskTypeRegistry:
    """Name → spec; built-ins first, then registered types (which may replace them)."""

    def __init__(self, specs: list[TaskTypeSpec] | None = None) -> None:
        self._specs: dict[str, TaskTypeSpec] = {s.name: s for s in specs or []}

    def next_version(self, name: str) -> int:
        previous = self._specs.get(name)
        return previous.version + 1 if previous else 0

    def register(self, spec: TaskTypeSpec, version: int | None = None) -> TaskTypeSpec:
        """Add or replace a type; its version goes up by one unless ``version`` is given."""
        if version is None:
            previous = self._specs.get(spec.name)
            version = previous.version + 1 if previous else spec.version
        spec = TaskTypeSpec(**{**spec.__dict__, "version": version})
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> TaskTypeSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTaskTypeError(name, list(self._specs)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[TaskTypeSpec]:
        return list(self._specs.values())
