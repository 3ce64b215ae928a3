"""The suite keeps to its own directories: its Rays, their tokens and raytasks' data live in
one temp directory of the run's, never in the user's ``~/.ray``, ``~/.raytasks`` or
``/tmp/ray``.

Ray reads three variables for this, and every child process inherits them:

- ``RAY_TMPDIR``: where an embedded ``ray.init`` and ``ray start`` keep their session
  (sockets, logs, the address file ``"auto"`` reads);
- ``RAY_AUTH_TOKEN_PATH``: the token a new cluster takes and a client sends; without it
  Ray 2.60 creates ``~/.ray/auth_token`` at the first embedded ``ray.init``;
- ``RAYTASKS_DATA_DIR``: raytasks' own default data directory.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path

#: what a test run must never touch under the user's home
HOME_DIRS = (".ray", ".raytasks")


def isolate_suite() -> Path:
    """Point Ray and raytasks at a fresh directory of this run's; removed at exit.

    Returns the directory. Called once, when the suite's conftest is imported, before any
    Ray starts. The directory sits near the root: Ray's AF_UNIX socket paths are short.
    """
    root = Path(tempfile.mkdtemp(prefix="rts-", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    os.environ["RAY_TMPDIR"] = str(root)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    os.environ["RAYTASKS_DATA_DIR"] = str(root / "raytasks")
    for name in ("RAY_ADDRESS", "RAYTASKS_ADDRESS", "RAY_AUTH_TOKEN"):
        os.environ.pop(name, None)  # a cluster of the user's is never the suite's
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def home_snapshot(home: Path) -> dict[str, int]:
    """Every file under ``home``'s Ray and raytasks directories, with its mtime (ns)."""
    seen: dict[str, int] = {}
    for name in HOME_DIRS:
        top = home / name
        if top.exists():
            seen[str(top)] = top.stat().st_mtime_ns
        for path in top.rglob("*") if top.is_dir() else ():
            try:
                seen[str(path)] = path.stat().st_mtime_ns
            except OSError:  # gone while listed
                continue
    return seen


def changed_since(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """The paths that are new or modified in ``after``."""
    return sorted(path for path, mtime in after.items() if before.get(path) != mtime)
