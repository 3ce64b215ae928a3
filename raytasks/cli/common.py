"""What every ``raytasks`` command shares: exit codes, errors as exit codes, output, joining
the cluster, and ``KEY=VALUE`` parameters.

Exit codes: 0 success, 1 the task failed or was cancelled, 2 bad usage or
invalid input, 3 unknown id, 4 queue full, 5 timed out waiting, 6 not connected.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import (
    InvalidParametersError,
    NotConnectedError,
    PayloadTooLargeError,
    QueueFullError,
    RaytasksError,
    TaskNotFoundError,
    UnknownTaskTypeError,
    WaitTimeoutError,
)

EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_FULL, EXIT_TIMEOUT, EXIT_OFFLINE = 1, 2, 3, 4, \
    5, 6


def exit_code(exc: RaytasksError) -> int:
    """The exit code a command ends with when ``exc`` stops it."""
    if isinstance(exc, TaskNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, QueueFullError):
        return EXIT_FULL
    if isinstance(exc, WaitTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, NotConnectedError):
        return EXIT_OFFLINE
    if isinstance(exc, InvalidParametersError | UnknownTaskTypeError | PayloadTooLargeError):
        return EXIT_INVALID
    return EXIT_FAILED


@contextmanager
def errors(as_json: bool) -> Iterator[None]:
    """Turn a :class:`RaytasksError` raised inside into its message and exit code.

    The message goes to stdout as a JSON object (``error``, ``message`` and the error's
    data) with ``as_json``, else to stderr as ``error: …``.
    """
    try:
        yield
    except RaytasksError as exc:
        if as_json:
            click.echo(json.dumps({"error": type(exc).__name__, "message": str(exc),
                                   **jsonable(exc.data)}))
        else:
            click.echo(f"error: {exc}", err=True)
        sys.exit(exit_code(exc))


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every value JSON can't hold as its string."""
    return json.loads(json.dumps(data, default=str))


def connect(ctx: click.Context, **overrides: Any) -> Any:
    """Join the cluster the user means (:func:`raytasks.runtime.clusters.choose_cluster`:
    --embedded, --address/RAYTASKS_ADDRESS/RAY_ADDRESS, the cluster `raytasks up`
    recorded, else an embedded Ray without Ray's dashboard unless ``ray_dashboard=True``
    is passed), saying on stderr which one and why.

    A cluster that cannot be joined is a :class:`NotConnectedError` (exit 6) within
    seconds, saying why, which cluster it was and how to choose another.
    """
    from .. import runtime
    from ..runtime.clusters import choose_cluster
    from ..settings import Settings

    settings = Settings(**overrides)
    choice = choose_cluster(settings, address=ctx.obj.get("address"),
                            address_source=ctx.obj.get("address_source", "--address"),
                            embedded=ctx.obj.get("embedded", False))
    if choice.embedded and "ray_dashboard" not in overrides:
        settings = Settings(**{**overrides, "ray_dashboard": False})  # a one-off command
    click.echo(f"raytasks: using {choice.describe()}", err=True)
    try:
        return runtime.connect(choice.address, settings=settings)
    except NotConnectedError as exc:
        raise choice.refused(exc) from None


def emit(as_json: bool, payload: Any, human: Callable[[], None]) -> None:
    """Print ``payload`` as JSON with ``as_json``, else call ``human`` to print it for people."""
    if as_json:
        click.echo(json.dumps(payload, default=str))
    else:
        human()


def parse_params(params: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    """Task parameters from ``--params`` (a JSON object) and ``-p KEY=VALUE`` options.

    Each VALUE is read as JSON when it parses, else kept as a string; ``-p`` wins over
    ``--params``. A ``-p`` without ``=`` is a :class:`click.BadParameter` (exit 2).
    """
    out: dict[str, Any] = json.loads(params_json) if params_json else {}
    for item in params:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
