"""A throwaway PostgreSQL server started from the system's binaries (never mocked)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are missing: "
                           "`make test-deps` installs them")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="raytasks-pg-"))
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # the server refuses to run as root
            self.user = "postgres"
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", self.user], check=True)
            shutil.chown(self.root, self.user)
            os.chmod(self.root, 0o700)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self, *, durable: bool = False) -> str:
        """Start the server; ``durable``: commits survive ``pg_ctl stop -m immediate``
        (synchronous_commit on; off by default, for speed, since the suite never crashes
        the server's host)."""
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c synchronous_commit={'on' if durable else 'off'} -c full_page_writes=off")
        self._opts = opts
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "start")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def halt(self) -> None:
        """Stop the server at once, as a crash or a failover does (``-m immediate``),
        keeping its data for :meth:`resume`."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again, on the same port and data."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", self._opts,
                  "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
