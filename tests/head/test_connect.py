"""raytasks.connect() and the CLI's --address against a real token-auth head, in every address
form Ray accepts, and failing fast (seconds, not Ray's 30 s) with a reason when it cannot."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import LocalHead, free_port
from tests.head.conftest import client_env

RAYTASKS = str(Path(sys.executable).parent / "raytasks")
JOIN = """
import json, os, sys, time
import ray
from raytasks import Settings
from raytasks.runtime.connection import join
c = join(sys.argv[1] if sys.argv[1] != "-" else None, Settings())
print(json.dumps({"kind": c.kind, "token": c.token_auth, "join_s": c.join_s,
                  "mode": os.environ.get("RAY_AUTH_MODE"),
                  "cpus": ray.cluster_resources().get("CPU"), "dashboard": c.dashboard_url}))
"""
# every case in one process: each fails before ray.init, so the process can try the next
REFUSE = """
import json, os, sys, time
from ray._raylet import AuthenticationTokenLoader
from raytasks import Settings
from raytasks.errors import NotConnectedError
from raytasks.runtime.connection import join
out = []
for address, env in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if v is not None})
    for name in [k for k, v in env.items() if v is None]:
        os.environ.pop(name, None)
    AuthenticationTokenLoader.instance().reset_cache()
    started = time.monotonic()
    try:
        join(address, Settings())
        out.append({"joined": address})
    except NotConnectedError as exc:
        out.append({"error": str(exc), "reason": exc.data.get("reason"),
                    "s": time.monotonic() - started})
    os.environ.clear()
    os.environ.update(saved)
print(json.dumps(out))
"""


def _run(head: LocalHead, script: str, arg: str, tmp_path: Path, **env: str) -> Any:
    environ = client_env(head, "connect", str(tmp_path / "data"), **env)
    out = subprocess.run([sys.executable, "-c", script, arg], env=environ,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("form", ["auto", "gcs", "client"])
def test_every_address_form_joins_a_token_auth_cluster(form: str, ray_head: LocalHead,
                                                       tmp_path: Path) -> None:
    # Given a token-auth head and a client without RAY_AUTH_MODE, when it joins
    address = {"auto": "auto", "gcs": ray_head.gcs_address,
               "client": ray_head.client_address}[form]
    joined = _run(ray_head, JOIN, address, tmp_path)
    # Then it joined that cluster, with token auth switched on for it
    assert joined["kind"] == ("client" if form == "client" else "gcs")
    assert joined["token"] is True and joined["mode"] == "token"
    assert joined["cpus"] == 2.0
    print(f"join {form}: {joined['join_s']:.2f} s")


def test_embedded_keeps_rays_dashboard_and_jobs_api(ray_head: LocalHead,
                                                    tmp_path: Path) -> None:
    # Given no address at all and the dashboard setting on, when joining
    joined = _run(ray_head, JOIN, "-", tmp_path, RAYTASKS_RAY_DASHBOARD="true")
    # Then an embedded Ray runs with its dashboard (and so the Jobs API) on localhost
    assert joined["kind"] == "embedded" and str(joined["dashboard"]).startswith(
        "http://127.0.0.1:")
    print(f"join embedded, with Ray's dashboard: {joined['join_s']:.2f} s")


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
        (ray_head.gcs_address, {"HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": None},
         "token_missing", "no token"),
        (ray_head.client_address, {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")},
         "token_missing", "cannot be read"),
        (ray_head.gcs_address, {"RAY_AUTH_MODE": "disabled"}, "auth_mode",
         "RAY_AUTH_MODE=token"),
        ("http://127.0.0.1:8265", {}, "address", "HTTP address"),
    ]
    results = _run(ray_head, REFUSE, json.dumps([[a, e] for a, e, _, _ in cases]), tmp_path)
    for (address, env, reason, says), failed in zip(cases, results, strict=True):
        assert failed.get("reason") == reason, (address, env, failed)
        assert says in failed["error"], failed
        assert failed["s"] < 5, failed  # not Ray's 20-30 s


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
