"""Checks of HTTP requests against the operator's settings, before the manager sees them.

The request models already refuse malformed input (:mod:`raytasks.inputs`); what
needs the settings is here: a built-in task may only name resources the operator
configured, and a task may only notify addresses inside the operator's
allow-list. Both refuse with 422 naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import InvalidParametersError
from ..handlers.builtin import BUILTIN_TYPES
from ..models import TaskCreateRequest
from ..notify.email import allowed
from ..resources import Resources, resource_refs
from ..settings import Settings

_BUILTIN_PARAMS: dict[str, type[BaseModel] | None] = {
    spec.name: spec.params_model for spec in BUILTIN_TYPES}


def notify_errors(entries: list[str], settings: Settings, prefix: str) -> list[dict[str, str]]:
    """Errors for every (already normalised) address outside the allow-list."""
    if entries and settings.notify.email is None:
        return [{"field": f"{prefix}notify", "reason": "email notifications are not "
                 "configured on this server; a task cannot add recipients"}]
    return [{"field": f"{prefix}notify.{i}", "reason": f"{address} is not in the operator's "
             "allow-list (notify.email.allow_domains / allow_addresses)"}
            for i, address in enumerate(entries)
            if not allowed(settings.notify.email, address)]


def resource_errors(request: TaskCreateRequest, settings: Settings,
                    prefix: str) -> list[dict[str, str]]:
    """Errors for every named resource of a built-in task that the settings do not have."""
    model = _BUILTIN_PARAMS.get(request.task_type)
    if model is None:
        return []
    try:
        params: Any = model.model_validate(request.parameters)
    except ValidationError:
        return []  # the manager names these errors field by field
    return [{**e, "field": prefix + e["field"]}
            for e in Resources(settings.resources).check(resource_refs(params))]


def vet_create(requests: list[TaskCreateRequest], settings: Settings,
               prefix: str = "") -> None:
    """Raises InvalidParametersError naming every field of every request that fails.

    ``prefix`` names where a single request sits (``template.`` in a schedule).
    """
    errors = []
    for i, request in enumerate(requests):
        where = f"{prefix}requests[{i}]." if len(requests) > 1 else prefix
        errors += resource_errors(request, settings, where)
        errors += notify_errors(request.notify, settings, where)
    if errors:
        raise InvalidParametersError(errors)


def vet_notify(entries: list[str], settings: Settings, prefix: str) -> None:
    errors = notify_errors(entries, settings, prefix)
    if errors:
        raise InvalidParametersError(errors)
