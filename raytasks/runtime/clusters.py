"""Which Ray cluster a command joins: only one it has reason to think is the user's.

A Ray cluster that merely runs on this machine (someone else's ``ray start``, another
project's test) is not a reason. The reasons, in order:

1. ``--embedded``: a Ray of the command's own, whatever else is set;
2. the address given (``--address``, ``RAYTASKS_ADDRESS``, ``RAY_ADDRESS``);
3. the cluster ``raytasks up`` started or joined, recorded in ``<data_dir>/cluster.json``,
   while it answers;
4. otherwise an embedded Ray.

Every choice carries how it was made, so a command can say which cluster it uses and why,
and an error can say how to choose another.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotConnectedError
from ..settings import Settings
from .connection import (
    Connection,
    ensure_token,
    find_local_cluster,
    parse_address,
    probe,
    token_header,
)

RECORD_NAME = "cluster.json"
#: what `raytasks up` asks of `ray start` when these ports are free (Ray's own defaults)
DEFAULT_PORTS = {"port": 6379, "ray-client-server-port": 10001, "dashboard-port": 8265}
EMBEDDED = "local"  # the address that means "a Ray of this process's own"


@dataclass(frozen=True)
class ClusterChoice:
    """The address a command joins (``"local"``: embedded) and how it was chosen."""

    address: str
    source: str

    @property
    def embedded(self) -> bool:
        return self.address == EMBEDDED

    def describe(self) -> str:
        where = ("an embedded Ray of this command's own" if self.embedded
                 else f"the Ray cluster at {self.address}")
        return f"{where} ({self.source})"

    def refused(self, exc: NotConnectedError) -> NotConnectedError:
        """``exc`` told with the cluster it was about, how it was found and what else to do."""
        return NotConnectedError(
            f"{exc} [tried {self.describe()}]; choose another cluster with --address "
            "ADDRESS, or --embedded for a Ray of this command's own", **exc.data)


def record_file(settings: Settings) -> Path:
    return settings.data_dir / RECORD_NAME


def record_cluster(settings: Settings, joined: Connection) -> Path:
    """Remember the cluster ``raytasks up`` brought raytasks up on, for later commands."""
    address = joined.address if joined.kind == "client" else joined.target
    path = record_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"address": address}))
    return path


def recorded_cluster(settings: Settings) -> tuple[str | None, str]:
    """The recorded cluster's address while it answers, and a sentence on what was found."""
    path = record_file(settings)
    try:
        address = str(json.loads(path.read_text())["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"no cluster recorded by `raytasks up` in {path}"
    if probe(parse_address(address), token_header(), timeout_s=2.0) in ("unreachable", "slow"):
        return None, f"the cluster `raytasks up` recorded in {path}, {address}, does not answer"
    return address, f"recorded by `raytasks up` in {path}"


def choose_cluster(settings: Settings, *, address: str | None = None,
                   address_source: str = "--address", embedded: bool = False) -> ClusterChoice:
    """The cluster to join (see the module's docstring for the order)."""
    if embedded:
        return ClusterChoice(EMBEDDED, "--embedded")
    if address:
        return ClusterChoice(address, address_source)
    for name in ("RAYTASKS_ADDRESS", "RAY_ADDRESS"):
        if os.environ.get(name):
            return ClusterChoice(os.environ[name], name)
    found, why = recorded_cluster(settings)
    if found is not None:
        return ClusterChoice(found, why)
    return ClusterChoice(EMBEDDED, f"no --address, RAYTASKS_ADDRESS or RAY_ADDRESS, and {why}")


def start_head() -> ClusterChoice:
    """``ray start --head`` on this machine, with a token made first if there is none.

    Ray's default ports where they are free, else free ones (another Ray may hold them).

    Raises:
        NotConnectedError: ``ray start`` failed; the message has its output.
    """
    ensure_token()
    ports = {flag: port if _free(port) else _any_free_port()
             for flag, port in DEFAULT_PORTS.items()}
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    cmd = [_ray_bin(), "start", "--head", "--disable-usage-stats",
           *(f"--{flag}={port}" for flag, port in ports.items())]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise NotConnectedError(f"`{' '.join(cmd)}` failed:\n{out.stdout}{out.stderr}",
                                reason="ray")
    # the address file `ray start` has just written names the cluster it started
    return ClusterChoice(find_local_cluster(), "started now by `raytasks up`")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _ray_bin() -> str:
    """The ``ray`` command of this interpreter's environment."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


__all__ = ["ClusterChoice", "choose_cluster", "record_cluster", "record_file",
           "recorded_cluster", "start_head"]
