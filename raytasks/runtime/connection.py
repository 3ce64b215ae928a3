"""Joining Ray the way Ray users address it, and failing fast with a reason when it cannot.

Every address form ``ray.init`` takes works: none (an embedded local Ray),
``"auto"`` (the latest ``ray start`` on this machine), ``"host:port"`` (a GCS)
and ``"ray://host:port"`` (a Ray client server). Before Ray is asked to join,
one gRPC call with a short deadline probes the target, so what Ray would turn
into a 20-30 s hang becomes an error at once that says why and what to set:

- nothing answers: the head is down, or the port is closed from here;
- the port is the other kind (a GCS port given as ``ray://``, or the reverse);
- the cluster wants a token and none is found, or the one found is refused.

Token auth (Ray 2.52+): Ray finds the token in ``RAY_AUTH_TOKEN``, the file
named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``, but only sends it
when ``RAY_AUTH_MODE=token``, which Ray sets by itself for ``"auto"`` only.
When the probe shows the cluster wants a token and one is found, this module
sets ``RAY_AUTH_MODE=token`` for the process before ``ray.init``, for every
address form.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import ray

from ..errors import NotConnectedError
from ..settings import Settings

log = logging.getLogger(__name__)

AddressKind = Literal["embedded", "auto", "gcs", "client"]
PROBE_TIMEOUT_S = 3.0
#: tries to join a Ray client server whose per-client server failed to start
CLIENT_SERVER_TRIES = 3
TOKEN_HINT = ("put the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN (`ray "
              "get-auth-token` on the head prints it)")


@dataclass(frozen=True)
class Connection:
    """How this process joined Ray: the address as given and resolved, and how long it took."""

    kind: AddressKind
    address: str | None
    target: str | None
    token_auth: bool
    join_s: float
    dashboard_url: str | None = None


@dataclass(frozen=True)
class Target:
    """A parsed address: its kind, and the ``host:port`` to probe (none when embedded)."""

    kind: AddressKind
    address: str | None
    hostport: str | None = None


def parse_address(address: str | None) -> Target:
    """Classify ``address`` as Ray does; ``None`` and ``"local"`` mean embedded.

    Raises:
        NotConnectedError: the address is of no form Ray joins (an HTTP URL, a bad port).
    """
    if address is None or address.strip() in ("", "local"):
        return Target("embedded", None)
    address = address.strip()
    if address == "auto":
        return Target("auto", address)
    if address.startswith(("http://", "https://")):
        raise NotConnectedError(
            f"{address!r} is an HTTP address (the dashboard or Jobs API); raytasks joins a "
            "cluster at its GCS address (host:6379) or its Ray client server "
            "(ray://host:10001)", address=address, reason="address")
    kind: AddressKind = "client" if address.startswith("ray://") else "gcs"
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise NotConnectedError(
            f"{address!r} is not an address raytasks can join: use host:port (a GCS, "
            "default port 6379) or ray://host:port (a Ray client server, default 10001)",
            address=address, reason="address")
    return Target(kind, address, hostport)


def resolve_address(address: str | None) -> str | None:
    """The address to join: the argument, else ``RAYTASKS_ADDRESS``, else ``RAY_ADDRESS``."""
    for value in (address, os.environ.get("RAYTASKS_ADDRESS"), os.environ.get("RAY_ADDRESS")):
        if value:
            return value
    return None


def join(address: str | None, settings: Settings) -> Connection:
    """Join Ray at ``address`` (see :func:`resolve_address`), or start an embedded Ray.

    Embedded, Ray's own dashboard and Jobs API run when ``settings.ray_dashboard``.

    Raises:
        NotConnectedError: the cluster cannot be joined; the message says why and what to
            set. ``data["reason"]`` is one of ``address``, ``no_cluster``, ``unreachable``,
            ``wrong_port``, ``token_missing``, ``token_refused``, ``auth_mode``, ``ray``.
    """
    target = parse_address(resolve_address(address))
    started = time.monotonic()
    common: dict[str, Any] = {"namespace": settings.namespace, "configure_logging": False,
                              "log_to_driver": os.environ.get("RAYTASKS_WORKER_LOGS") == "1"}
    if target.kind == "embedded":
        context = ray.init(address="local", include_dashboard=settings.ray_dashboard,
                           dashboard_host="127.0.0.1", **common)
        url = getattr(context, "dashboard_url", None) if settings.ray_dashboard else None
        return Connection("embedded", None, None, _auth_mode() == "token",
                          time.monotonic() - started, f"http://{url}" if url else None)
    if target.kind == "auto":
        found = parse_address(find_local_cluster())
        target = Target(found.kind, found.address if found.kind == "client" else "auto",
                        found.hostport)
    assert target.hostport is not None
    token_auth = _arrange_auth(target)
    # the resolved address, not "auto": Ray would switch token auth on by itself for
    # "auto" whenever a token file exists, even for a cluster that wants none
    init_address = target.address if target.kind == "client" else target.hostport
    for attempt in range(CLIENT_SERVER_TRIES):
        try:
            ray.init(address=init_address, **common)
            break
        except (ConnectionError, RuntimeError) as exc:
            # the Ray client server starts a process per client, and that start can fail
            # on a busy head ("Starting Ray client server failed"), or the process can die
            # as it forks (ray-project/ray#63202: the proxier then fails in
            # start_specific_server): the next call starts another, so try again
            retry = target.kind == "client" and attempt + 1 < CLIENT_SERVER_TRIES \
                and _specific_server_failed(str(exc))
            if not retry:
                raise NotConnectedError(f"Ray could not join {target.address}: {exc}",
                                        address=target.address, reason="ray") from None
            log.warning("the Ray client server at %s could not start a server for this "
                        "client (%s); trying again", target.address, exc)
            time.sleep(1.0)
    return Connection(target.kind, target.address, target.hostport, token_auth,
                      time.monotonic() - started)


def node_id() -> str:
    """The id of the Ray node this process runs on (once it has joined Ray)."""
    node: str = ray.get_runtime_context().get_node_id()
    return node


def _specific_server_failed(message: str) -> bool:
    """Whether a Ray client join failed because its per-client server did not start."""
    return "client server failed" in message or "start_specific_server" in message


def find_local_cluster() -> str:
    """The GCS address ``"auto"`` means: the latest ``ray start`` on this machine."""
    from ray._private.services import get_ray_address_from_environment

    try:
        found: str | None = get_ray_address_from_environment("auto", None)
    except ConnectionError:
        found = None
    if not found or found == "auto":
        raise NotConnectedError(
            "no running Ray cluster on this machine for address 'auto': start one with "
            "`ray start --head` (or `raytasks up`), name a cluster with "
            "--address/RAYTASKS_ADDRESS, or connect without an address for an embedded Ray",
            address="auto", reason="no_cluster")
    return found


def ensure_token() -> None:
    """Make sure a token exists for a cluster this machine starts (``ray start`` needs one
    with ``RAY_AUTH_MODE=token``); creates ``~/.ray/auth_token`` as Ray would."""
    if token_header():
        return
    from ray._private.authentication.authentication_token_setup import (
        generate_and_save_token,
    )

    generate_and_save_token()
    _raylet().AuthenticationTokenLoader.instance().reset_cache()


def _auth_mode() -> str:
    return os.environ.get("RAY_AUTH_MODE", "").strip().lower()


def token_header() -> dict[str, str]:
    """The ``authorization`` header Ray would send, from wherever Ray finds the token."""
    loader = _raylet().AuthenticationTokenLoader.instance()
    try:
        if not loader.has_token(ignore_auth_mode=True):
            return {}
        header: dict[str, str] = loader.get_token_for_http_header(ignore_auth_mode=True)
    except Exception as exc:  # RAY_AUTH_TOKEN_PATH names a missing or empty file
        raise NotConnectedError(f"the Ray token cannot be read: {str(exc).split('. ')[0]}; "
                                f"{TOKEN_HINT}", reason="token_missing") from None
    return header


def _arrange_auth(target: Target) -> bool:
    """Probe ``target``; switch token auth on for this process if the cluster wants it.

    Returns whether token auth is on.
    """
    header = token_header()
    status = _patient_probe(target, None)
    if status == "ok":
        return _auth_mode() == "token"
    if status == "unauthenticated":
        where = target.address
        if _auth_mode() == "disabled":
            raise NotConnectedError(
                f"the cluster at {where} requires token authentication, but RAY_AUTH_MODE "
                "is 'disabled' here: unset it or set RAY_AUTH_MODE=token, and "
                f"{TOKEN_HINT}", address=where, reason="auth_mode")
        if not header:
            raise NotConnectedError(
                f"the cluster at {where} requires token authentication and no token was "
                f"found: {TOKEN_HINT}", address=where, reason="token_missing")
        if _patient_probe(target, header) == "unauthenticated":
            raise NotConnectedError(
                f"the cluster at {where} refused the token found here (RAY_AUTH_TOKEN, "
                f"RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): {TOKEN_HINT}",
                address=where, reason="token_refused")
        _enable_token_auth()
        return True
    if status == "wrong_port":
        other = (f"{target.hostport} (a GCS address, without ray://)" if target.kind == "client"
                 else f"ray://{target.hostport} (a Ray client server)")
        what = "a Ray client server" if target.kind == "client" else "a Ray GCS"
        raise NotConnectedError(
            f"{target.address} answers, but it is not {what}; did you mean {other}?",
            address=target.address, reason="wrong_port")
    raise NotConnectedError(
        f"nothing answers at {target.hostport}: is the Ray head "
        "running, and is the port open from here? (GCS default 6379, Ray client server "
        "10001, started with `ray start --head --ray-client-server-port=10001`)",
        address=target.address, reason="unreachable")


ProbeStatus = Literal["ok", "unauthenticated", "wrong_port", "unreachable", "slow"]
SLOW_PROBE_S = 8.0  # a port that accepts but answers late (a busy head) gets this long


def _patient_probe(target: Target, header: dict[str, str] | None) -> ProbeStatus:
    """A refused connection fails at once; a port that accepts but answers late is given
    :data:`SLOW_PROBE_S` before it counts as unreachable."""
    status = probe(target, header)
    if status == "slow":
        status = probe(target, header, SLOW_PROBE_S)
    return "unreachable" if status == "slow" else status


def probe(target: Target, header: dict[str, str] | None,
          timeout_s: float = PROBE_TIMEOUT_S) -> ProbeStatus:
    """One cheap gRPC call to the GCS or the client server at ``target``, with a deadline."""
    import grpc

    assert target.hostport is not None
    metadata = tuple((k.lower(), v) for k, v in (header or {}).items())
    channel = grpc.insecure_channel(target.hostport)
    try:
        if target.kind == "client":
            pb, rpc = _generated("ray_client_pb2"), _generated("ray_client_pb2_grpc")
            rpc.RayletDriverStub(channel).ClusterInfo(
                pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING), timeout=timeout_s,
                metadata=metadata)
        else:
            pb, rpc = _generated("gcs_service_pb2"), _generated("gcs_service_pb2_grpc")
            rpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                pb.GetClusterIdRequest(), timeout=timeout_s, metadata=metadata)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return "unauthenticated"
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return "wrong_port"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "slow"
        return "unreachable"
    finally:
        channel.close()
    return "ok"


def _enable_token_auth() -> None:
    """``RAY_AUTH_MODE=token`` for this process and its children, as Ray's own CLI does."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray caches its config at import; refresh it so this process sees the mode
        _raylet().Config.initialize("")
    except Exception as exc:  # an older wheel without the refresh: the env var is what counts
        log.debug("could not refresh Ray's config: %s", exc)


def _raylet() -> Any:
    return importlib.import_module("ray._raylet")


def _generated(module: str) -> Any:
    """Ray's generated gRPC modules (untyped)."""
    return importlib.import_module(f"ray.core.generated.{module}")


__all__ = ["Connection", "Target", "ensure_token", "find_local_cluster", "join",
           "parse_address", "probe", "resolve_address", "token_header"]
