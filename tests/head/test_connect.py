"""raytasks.connect() and the CLI's --address against a real token-auth head, in every address
form Ray accepts, and failing fast (seconds, not Ray's 30 s) with a reason when it cannot."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import LocalHead, free_port
from tests.head.conftest import client_env

RAYTASKS = str(Path(sys.executable).parent / "raytasks")
JOIN = """
import json, os, sys, time
import ray, raytasks
from raytasks.errors import NotConnectedError
started = time.monotonic()
try:
    rt = raytasks.connect(sys.argv[1] if sys.argv[1] != "-" else None)
except NotConnectedError as exc:
    print(json.dumps({"error": str(exc), "reason": exc.data.get("reason"),
                      "s": time.monotonic() - started}))
    sys.exit(0)
c = rt.connection
print(json.dumps({"kind": c.kind, "token": c.token_auth, "join_s": c.join_s,
                  "connect_s": time.monotonic() - started,
                  "mode": os.environ.get("RAY_AUTH_MODE"),
                  "cpus": ray.cluster_resources().get("CPU"), "dashboard": c.dashboard_url}))
rt.shutdown()
os._exit(0)  # the client's wait-stream thread must not outlive Ray (see the report)
"""


def _join(head: LocalHead, address: str, tmp_path: Path, **env: str) -> dict[str, object]:
    environ = client_env(head, "connect", str(tmp_path / "data"), **env)
    out = subprocess.run([sys.executable, "-c", JOIN, address], env=environ,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("form", ["auto", "gcs", "client"])
def test_every_address_form_joins_a_token_auth_cluster(form: str, ray_head: LocalHead,
                                                       tmp_path: Path) -> None:
    # Given a token-auth head and a client without RAY_AUTH_MODE, when it connects
    address = {"auto": "auto", "gcs": ray_head.gcs_address,
               "client": ray_head.client_address}[form]
    joined = _join(ray_head, address, tmp_path)
    assert "error" not in joined, joined
    # Then it joined that cluster, with token auth switched on for it
    assert joined["kind"] == ("client" if form == "client" else "gcs")
    assert joined["token"] is True and joined["mode"] == "token"
    assert joined["cpus"] == 2.0
    print(f"connect {form}: Ray joined in {joined['join_s']:.2f} s, raytasks up in "
          f"{joined['connect_s']:.2f} s")


def test_embedded_keeps_rays_dashboard_and_jobs_api(ray_head: LocalHead,
                                                    tmp_path: Path) -> None:
    # Given no address at all and the dashboard setting on, when connecting
    joined = _join(ray_head, "-", tmp_path, RAYTASKS_RAY_DASHBOARD="true")
    # Then an embedded Ray runs with its dashboard (and so the Jobs API) on localhost
    assert joined["kind"] == "embedded" and str(joined["dashboard"]).startswith(
        "http://127.0.0.1:")
    print(f"connect embedded (with dashboard): Ray started in {joined['join_s']:.2f} s, "
          f"raytasks up in {joined['connect_s']:.2f} s")


def test_what_cannot_be_joined_fails_in_seconds_saying_why(ray_head: LocalHead,
                                                           tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    cases = [
        (nobody, {}, "unreachable", "nothing answers"),
        (f"ray://{nobody}", {}, "unreachable", "nothing answers"),
        (f"ray://{ray_head.gcs_address}", {}, "wrong_port", "did you mean"),
        (ray_head.client_address.removeprefix("ray://"), {}, "wrong_port", "ray://"),
        (ray_head.client_address, {"RAY_AUTH_TOKEN": "not-the-token"}, "token_refused",
         "refused the token"),
        (ray_head.gcs_address, {"HOME": str(tmp_path)}, "token_missing", "no token"),
        (ray_head.client_address, {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")},
         "token_missing", "cannot be read"),
        (ray_head.gcs_address, {"RAY_AUTH_MODE": "disabled"}, "auth_mode",
         "RAY_AUTH_MODE=token"),
    ]
    for address, env, reason, says in cases:
        started = time.monotonic()
        failed = _join(ray_head, address, tmp_path, **env)
        assert failed.get("reason") == reason, (address, env, failed)
        assert says in str(failed["error"]), failed
        assert float(str(failed["s"])) < 5 and time.monotonic() - started < 60


def test_the_cli_address_behaves_the_same(ray_head: LocalHead, tmp_path: Path) -> None:
    env = client_env(ray_head, "connect-cli", str(tmp_path / "data"))
    # Given the Ray client address, when the CLI lists tasks, then it joins and answers
    ok = subprocess.run([RAYTASKS, "--address", ray_head.client_address, "stats", "--json"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "status_counts" in json.loads(ok.stdout)
    # and an address where nothing answers is exit 6 within seconds, saying what to check
    started = time.monotonic()
    bad = subprocess.run([RAYTASKS, "--address", f"ray://127.0.0.1:{free_port()}", "ls"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 6 and "nothing answers" in bad.stderr
    assert time.monotonic() - started < 30  # interpreter and Ray imports included
