"""Schemathesis against the live app's OpenAPI, with a valid token: no 5xx, and every
response matches the schema it declares. Bounded for ``make test``; ``make fuzz`` runs
it longer (RAYTASKS_FUZZ_EXAMPLES, RAYTASKS_FUZZ_SECONDS)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.httpserver import TOKENS

EXAMPLES = int(os.environ.get("RAYTASKS_FUZZ_EXAMPLES", "25"))
SECONDS = int(os.environ.get("RAYTASKS_FUZZ_SECONDS", "30"))


def test_the_openapi_fuzzed_gives_no_5xx_and_no_schema_violation(make_api: Any,
                                                                 tmp_path: Path) -> None:
    from raytasks.settings import ApiSettings
    from tests.httpserver import api_tokens

    # Given the API over a service with no executors (created tasks just wait); the
    # tokens schemathesis makes up for POST /session must not lock its own address out
    # of the rest of the run
    api = make_api(sleepy_workers=0, max_queue_size=100_000, api=ApiSettings(
        tokens=api_tokens(), max_body_bytes=64 * 1024, max_wrong_tokens=1_000_000))
    st = Path(sys.executable).parent / "st"
    # When schemathesis sends what the schema allows and what it forbids
    run = subprocess.run(
        [str(st), "run", f"{api.url}/openapi.json",
         "-H", f"Authorization: Bearer {TOKENS['alice']}",
         "--checks", "not_a_server_error,response_schema_conformance",
         "--max-examples", str(EXAMPLES), "--max-time", str(SECONDS), "--seed", "7",
         "--workers", "1", "--request-timeout", "30", "--no-shrink",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=SECONDS + 240, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    # Then it finds nothing
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert counts and int(counts[1]) == int(counts[2]) > 100, run.stdout[-3000:]
