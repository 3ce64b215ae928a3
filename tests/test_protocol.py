"""The manager's API is one typed interface: the core implements it (mypy checks that), and
the client's calls mirror it method for method, so a reader can follow a call by name."""

from __future__ import annotations

import inspect

from raytasks.manager.core import TaskManagerCore
from raytasks.protocol import ManagerApi
from raytasks.runtime.actors import RayLink
from raytasks.runtime.calls import ManagerCalls


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls, callable)
            if not name.startswith("_")}


def _params(signature: inspect.Signature) -> list[tuple[str, object]]:
    # Ray adds a tracing parameter to the methods of a class it made an actor of in this
    # process (``_ray_trace_ctx``): not part of the interface
    return [(p.name, p.default) for p in signature.parameters.values()
            if not p.name.startswith("_ray")]


def test_every_call_the_client_makes_is_a_method_of_the_api_with_its_parameters() -> None:
    # Given the manager's API and the client's typed calls
    api, calls = _methods(ManagerApi), _methods(ManagerCalls)
    # Then each call names a method of the API, with the same parameters and defaults
    assert set(calls) <= set(api), sorted(set(calls) - set(api))
    for name, signature in calls.items():
        assert _params(signature) == _params(api[name]), name


def test_every_method_of_the_api_is_called_and_implemented() -> None:
    api, core = _methods(ManagerApi), _methods(TaskManagerCore)
    # Then the client or an executor's link calls each method of the API
    called = set(_methods(ManagerCalls)) | set(_methods(RayLink)) | {"renew"}  # the tracker's
    assert set(api) <= called, sorted(set(api) - called)
    # and the core implements each with the same parameters
    for name, signature in api.items():
        assert _params(core[name]) == _params(signature), name
