"""The first `raytasks serve` on a fresh install makes an admin token, shows it once with a
login URL, keeps only its digest, and the server accepts it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import ray

from tests.cluster import free_port
from tests.conftest import wait_for


def test_first_serve_makes_an_admin_token_and_shows_it_once(service: Any,
                                                            tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    port = free_port()
    env = {**os.environ, "RAYTASKS_NAMESPACE": service.settings.namespace,
           "RAYTASKS_DATA_DIR": str(data_dir)}
    # Given no token anywhere, when the server starts
    proc = subprocess.Popen([str(Path(sys.executable).parent / "raytasks"), "--address",
                             ray.get_runtime_context().gcs_address, "serve", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any("Login URL" in line for line in lines) or proc.poll() is not None,
                 timeout_s=120, what="the first-run banner")
        token = next(line.split()[-1] for line in lines if line.strip().startswith("Token:"))
        login = next(line.split()[-1] for line in lines if "Login URL" in line)
        # Then it is shown with a login URL, and only its digest is on disk
        assert login == f"http://127.0.0.1:{port}/#token={token}"
        assert token not in (data_dir / "api_tokens.json").read_text()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(url + "/health") == 200, timeout_s=60, what="the server")
        # and the server takes it as an admin's, and nothing without it
        assert _get(url + "/tasks", token) == 200
        assert _get(url + "/tasks") == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # and `raytasks token list` names the admin token, never the token itself
    again = subprocess.run([str(Path(sys.executable).parent / "raytasks"), "token", "list"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert "admin" in again.stdout and token not in again.stdout


def _get(url: str, token: str | None = None) -> int:
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(url, headers=headers, timeout=5).status_code
    except httpx.HTTPError:
        return 0
