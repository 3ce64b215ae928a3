"""The CLI on a machine where raytasks has never run: ``raytasks up`` makes what Ray needs, and
commands without an address never join a cluster merely because one runs on the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx

from tests.cluster import LocalHead, free_port, stop_cluster
from tests.conftest import wait_for

RAYTASKS = str(Path(sys.executable).parent / "raytasks")
SUBMIT = ["submit", "prediction", "-p", "stock_code=000001.SZ", "-p", "days=2", "--wait",
          "--json"]


def _new_user(root: Path, name: str) -> dict[str, str]:
    """The environment of a user with an empty home, no token and no address set, whose Ray
    keeps its files under ``root`` (where another cluster's address file may lie)."""
    home = root / f"home-{name}"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_TMPDIR": str(root),
           "RAYTASKS_DATA_DIR": str(home / ".raytasks"), "RAYTASKS_NAMESPACE": f"fresh-{name}"}
    for var in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS",
                "RAYTASKS_ADDRESS"):
        env.pop(var, None)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAYTASKS, *args], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def _named_actors(head: LocalHead) -> list[dict[str, str]]:
    script = (f"import json, ray; ray.init(address={head.gcs_address!r}, "
              "log_to_driver=False); "
              "print(json.dumps(ray.util.list_named_actors(all_namespaces=True)))")
    out = subprocess.run([sys.executable, "-c", script], env=head.client_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_commands_without_an_address_ignore_a_cluster_that_merely_runs_here() -> None:
    # Given an unrelated `ray start --head` whose address file is where "auto" looks
    head = LocalHead(num_cpus=1).start()
    try:
        env = _new_user(head.root, "bob")
        # When a new user submits a task with no address
        submitted = _cli(env, *SUBMIT)
        # Then it ran on an embedded Ray of its own, and said so
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        assert json.loads(submitted.stdout)["status"] == "COMPLETED"
        assert "raytasks: using an embedded Ray" in submitted.stderr
        assert "no --address, RAYTASKS_ADDRESS or RAY_ADDRESS" in submitted.stderr
        # and `raytasks serve` with no address serves from an embedded Ray too
        port = free_port()
        serve = subprocess.Popen([RAYTASKS, "serve", "--port", str(port)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 stdin=subprocess.DEVNULL)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")),
                         daemon=True).start()  # type: ignore[union-attr]
        try:
            wait_for(lambda: _health(port) or serve.poll() is not None, timeout_s=120,
                     what="the server")
            assert serve.poll() is None, "".join(lines)[-3000:]
            assert any("raytasks: using an embedded Ray" in line for line in lines), lines
        finally:
            serve.terminate()
            serve.wait(timeout=60)
        # and the unrelated cluster never saw raytasks
        assert not [a for a in _named_actors(head) if a["namespace"].startswith("fresh-")]
    finally:
        head.stop()


def test_up_on_a_new_machine_makes_a_token_and_later_commands_join_its_cluster() -> None:
    root = Path(tempfile.mkdtemp(prefix="rtu-", dir="/tmp"))
    env = _new_user(root, "carol")
    home = Path(env["HOME"])
    record = Path(env["RAYTASKS_DATA_DIR"]) / "cluster.json"
    gcs_port = 0
    try:
        # Given a user with no token and no cluster, when they run `raytasks up`
        up = _cli(env, "up")
        if record.exists():
            gcs_port = int(json.loads(record.read_text())["address"].rsplit(":", 1)[1])
        # Then a token was made where Ray looks for it, a head started and was recorded
        assert up.returncode == 0, up.stdout + up.stderr[-3000:]
        assert (home / ".ray" / "auth_token").read_text().strip()
        assert "started now by `raytasks up`" in up.stderr
        # and a later command with no address joins that cluster, saying how it found it
        submitted = _cli(env, *SUBMIT)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        assert json.loads(submitted.stdout)["status"] == "COMPLETED"
        assert f"recorded by `raytasks up` in {record}" in submitted.stderr
        # and one told --embedded takes a Ray of its own instead (over the same store)
        embedded = _cli(env, "--embedded", "stats", "--json")
        assert embedded.returncode == 0, embedded.stderr[-3000:]
        assert "using an embedded Ray of this command's own (--embedded)" in embedded.stderr
        assert json.loads(embedded.stdout)["status_counts"] == {"COMPLETED": 1}
    finally:
        stop_cluster(root, gcs_port)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_a_cluster_that_cannot_be_joined_is_named_with_how_it_was_found(
        tmp_path: Path) -> None:
    # Given RAY_ADDRESS naming a port where nothing answers
    env = {**_new_user(tmp_path, "dave"), "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    # When a command runs with no address of its own
    out = _cli(env, "ls")
    # Then it fails saying which cluster, how it was found and how to choose another
    assert out.returncode == 6
    assert "the Ray cluster at 127.0.0.1:" in out.stderr and "(RAY_ADDRESS)" in out.stderr
    assert "--address ADDRESS, or --embedded" in out.stderr


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
