"""The suite never depends on, nor leaves anything in, the home of the user who runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HOME_BEFORE, REAL_HOME, SUITE_ROOT
from tests.isolation import changed_since, home_snapshot


def test_rays_of_the_suite_take_their_token_and_files_from_the_runs_own_directory() -> None:
    # Given the suite's environment, when a child process asks Ray where it keeps things
    script = ("from ray._common.utils import get_default_ray_temp_dir; "
              "from ray._raylet import AuthenticationTokenLoader as L; "
              "print(get_default_ray_temp_dir()); "
              "print(L.instance().has_token(ignore_auth_mode=True))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "HOME": str(SUITE_ROOT / "no-home")})
    assert out.returncode == 0, out.stderr[-2000:]
    temp_dir, has_token = out.stdout.split()
    # Then its sessions go under the run's directory and its token is found there, with no
    # home at all to find one in
    assert Path(temp_dir).is_relative_to(SUITE_ROOT), temp_dir
    assert has_token == "True", out.stderr
    assert Path(os.environ["RAY_AUTH_TOKEN_PATH"]).is_relative_to(SUITE_ROOT)


@pytest.mark.last
def test_the_whole_run_wrote_nothing_under_the_real_home() -> None:
    # Given every test of the run has ended (this one runs last), when the user's ~/.ray
    # and ~/.raytasks are listed again
    changed = changed_since(HOME_BEFORE, home_snapshot(REAL_HOME))
    # Then nothing in them is new or changed: no token, no session, no data of the suite's
    assert not changed, f"the suite wrote under {REAL_HOME}: {changed[:20]}"
