"""API tokens kept as digests under data_dir: made, listed and revoked from the CLI, the first
one made by `raytasks serve` on a fresh install, and read by the server as the file changes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from raytasks import Settings, tokens
from raytasks.errors import SettingsError
from raytasks.server.auth import hash_token
from raytasks.settings import ApiSettings, ApiToken

RAYTASKS = str(Path(sys.executable).parent / "raytasks")


def test_only_digests_are_stored_and_the_server_sees_changes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    # Given a fresh install, when the first admin token is ensured, then one is made, once
    first = tokens.ensure_first_admin(settings)
    assert first is not None and tokens.ensure_first_admin(settings) is None
    # and a user token for alice
    secret, record = tokens.create(settings, "alice")
    text = tokens.token_file(settings).read_text()
    assert secret not in text and first not in text and hash_token(secret) in text
    assert stat.S_IMODE(tokens.token_file(settings).stat().st_mode) == 0o600
    # Then the server's list holds the settings' tokens and both of the file's
    configured = ApiToken(sha256="0" * 64, owner="ops")
    with_config = Settings(data_dir=tmp_path, api=ApiSettings(tokens=[configured]))
    assert [(t.owner, t.role) for t in tokens.api_tokens(with_config)] == [
        ("ops", "user"), ("admin", "admin"), ("alice", "user")]
    # and a revoke is seen on the next read (the file changed)
    assert [r.id for r in tokens.revoke(settings, owner="alice")] == [record.id]
    assert [t.owner for t in tokens.api_tokens(settings)] == ["admin"]
    with pytest.raises(SettingsError, match="plain name"):
        tokens.create(settings, "<script>")


def test_token_commands(tmp_path: Path) -> None:
    env = {**os.environ, "RAYTASKS_DATA_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RAYTASKS, "token", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    made = json.loads(run("create", "--owner", "bob", "--json").stdout)
    assert made["owner"] == "bob" and made["token"].startswith("rt_")
    listed = json.loads(run("list", "--json").stdout)
    assert [(r["id"], r["owner"], r["role"]) for r in listed] == [(made["id"], "bob", "user")]
    assert made["token"] not in run("list").stdout
    assert run("revoke", "--owner", "bob").returncode == 0
    assert run("revoke", "--owner", "bob").returncode == 3
    assert run("revoke").returncode == 2
    assert json.loads(run("list", "--json").stdout) == []


def test_scoped_tokens_from_the_command_line_and_their_audit_trail(tmp_path: Path) -> None:
    env = {**os.environ, "RAYTASKS_DATA_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RAYTASKS, *args], env=env, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)

    # Given a monitoring token and a CI token that may submit backtests only
    monitor = json.loads(run("token", "create", "--owner", "ops", "--scope", "read",
                             "--json").stdout)
    ci = json.loads(run("token", "create", "--owner", "ci", "--scope", "submit",
                        "--task-type", "backtest", "--json").stdout)
    assert (monitor["scopes"], monitor["task_types"]) == (["read"], None)
    assert (ci["scopes"], ci["task_types"]) == (["submit"], ["backtest"])
    listed = {r["id"]: r for r in json.loads(run("token", "list", "--json").stdout)}
    assert listed[ci["id"]]["scopes"] == ["submit"]
    # task types for a token that cannot submit are refused
    assert run("token", "create", "--owner", "x", "--scope", "read", "--task-type",
               "backtest").returncode != 0
    # When one is revoked
    assert run("token", "revoke", "--id", ci["id"]).returncode == 0
    # Then the audit trail has each change, naming the token, its owner and who ran it
    out = run("audit", "--json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert [(e["action"], e["target"], e["target_owner"]) for e in entries] == [
        ("token.revoke", ci["id"], "ci"), ("token.create", ci["id"], "ci"),
        ("token.create", monitor["id"], "ops")]
    assert all(e["owner"].startswith("cli:") and e["request_id"] and e["source"]
               for e in entries)
    # and the command filters and prints it for people too
    only = json.loads(run("audit", "--action", "token.revoke", "--json").stdout)
    assert [e["target"] for e in only] == [ci["id"]]
    assert json.loads(run("audit", "--owner", "nobody", "--json").stdout) == []
    assert "token.revoke" in run("audit", "--hours", "1").stdout
