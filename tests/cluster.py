"""A real ``ray start --head`` cluster of a test's own: own temp dir, own ports, own token.

`ray stop` would stop every Ray on the machine (other people's test runs included),
so :meth:`LocalHead.stop` ends exactly this cluster's processes: the ones whose
command line names its temp dir, its session or its GCS address, and their
children, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: each socket stays bound until all are picked (ports
    picked one by one can repeat, and a head given one port twice fails to start)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class LocalHead:
    """A head node started with ``ray start --head`` (Ray client server, dashboard, Jobs API)."""

    def __init__(self, *, num_cpus: int = 2, resources: dict[str, float] | None = None,
                 autoscaling_config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        # AF_UNIX socket paths are short: keep the temp dir near the root
        self.root = Path(tempfile.mkdtemp(prefix="rth-", dir="/tmp"))
        self.temp_dir = self.root / "ray"
        # every port of the head at once, so no two of them are the same
        self.gcs_port, self.client_port, self.dashboard_port, *self._ports = free_ports(9)
        self.num_cpus, self.resources = num_cpus, resources or {}
        self.autoscaling_config = autoscaling_config
        # `python` on the nodes is this environment's, as in the raytasks image
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        # a token of its own, which its clients find through the same variable
        self.token_path = self.root / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_TOKEN_PATH": str(self.token_path), "RAY_TMPDIR": str(self.root),
                    "PATH": path, **(env or {})}
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            self.env.pop(name, None)
        self.node_ip = ""
        self.start_s = 0.0

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> LocalHead:
        # worker ports above the ephemeral range, where free_port() never lands
        low = random.randrange(61000, 64600, 50)
        ports = self._ports
        cmd = [RAY, "start", "--head", "--disable-usage-stats",
               f"--temp-dir={self.temp_dir}", f"--port={self.gcs_port}",
               f"--ray-client-server-port={self.client_port}",
               f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
               f"--num-cpus={self.num_cpus}", f"--node-manager-port={ports[0]}",
               f"--object-manager-port={ports[1]}", f"--metrics-export-port={ports[2]}",
               f"--runtime-env-agent-port={ports[3]}",
               f"--dashboard-agent-listen-port={ports[4]}",
               f"--dashboard-agent-grpc-port={ports[5]}",
               f"--min-worker-port={low}", f"--max-worker-port={low + 400}"]
        if self.resources:
            cmd.append(f"--resources={json.dumps(self.resources)}")
        if self.autoscaling_config is not None:
            config = self.root / "autoscaling.json"
            config.write_text(json.dumps(self.autoscaling_config))
            cmd.append(f"--autoscaling-config={config}")
        started = time.monotonic()
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180,
                             stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            self.stop()
            raise AssertionError(f"ray start failed:\n{out.stdout}\n{out.stderr}")
        self.start_s = time.monotonic() - started
        return self

    @property
    def auth_header(self) -> dict[str, str]:
        """The header Ray's HTTP clients (the Jobs API's) send with this head's token."""
        return {"authorization": f"Bearer {self.token_path.read_text().strip()}"}

    def client_env(self, **extra: str) -> dict[str, str]:
        """An environment for a client process of this cluster (token auth on)."""
        return {**self.env, **extra}

    def stop(self, timeout_s: float = 20.0, grace_s: float = 2.0) -> None:
        """End this cluster's processes (TERM, then KILL after ``grace_s``), and only those;
        remove its files. The grace is short: the GCS, the raylet, the runtime-env agent and
        the autoscaler's monitor outlive a TERM by far more than 5 s, and the cluster's files
        go with it anyway."""
        try:
            stop_cluster(self.root, self.gcs_port, timeout_s, grace_s)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def stop_cluster(root: Path, gcs_port: int, timeout_s: float = 20.0,
                 grace_s: float = 2.0) -> None:
    """End the processes of the cluster whose files live under ``root`` and whose GCS
    listens on ``gcs_port``, with their children, by pid (TERM, then KILL)."""
    pids = _own_pids(root, gcs_port)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, timeout_s)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            pids = {p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}
            if not pids:
                return
            time.sleep(0.1)


def _own_pids(root: Path, gcs_port: int) -> set[int]:
    """The processes whose command line names ``root``, one of its Ray sessions or the GCS
    port, and their children (workers, fake nodes' processes)."""
    sessions = [p.name for pattern in ("session_2*", "ray/session_2*")
                for p in root.glob(pattern)]
    marks = [str(root), f":{gcs_port} ", f":{gcs_port}\0", *sessions]
    table: dict[int, tuple[int, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(proc.name)] = (ppid, cmdline + "\0")
    own = {pid for pid, (_, cmd) in table.items()
           if any(m in cmd for m in marks) and "pytest" not in cmd}
    own.discard(os.getpid())
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in own} - own
        grew = bool(children)
        own |= children
    return own


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
