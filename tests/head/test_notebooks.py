"""Every notebook in notebooks/, executed cell by cell against a real head over ``ray://``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.cluster import LocalHead
from tests.head.conftest import client_env

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_committed_without_outputs() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["custom_task_type", "quickstart",
                                          "research_pipeline"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_runs_cell_by_cell_over_the_ray_client(path: Path, ray_head: LocalHead,
                                                          tmp_path: Path) -> None:
    # Given a notebook and a token-auth head, with only the ray:// address in the kernel's
    # environment (no RAY_AUTH_MODE: connect() has to arrange it)
    nb = nbformat.read(path, as_version=4)
    env = client_env(ray_head, f"nb-{path.stem}", str(tmp_path / "data"),
                     RAYTASKS_ADDRESS=ray_head.client_address, MPLBACKEND="Agg")
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    timings: list[float] = []
    # When every cell runs in order (a failing cell raises CellExecutionError here)
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            started = time.monotonic()
            client.execute_cell(cell, index)
            timings.append(time.monotonic() - started)
        # then the notebook joined over the Ray client with token auth on
        probe = nbformat.v4.new_code_cell(
            "import json, os\nfrom ray.util.client import ray as client_ray\n"
            "print(json.dumps({'kind': runtime.connection.kind, 'token': "
            "runtime.connection.token_auth, 'mode': os.environ.get('RAY_AUTH_MODE'), "
            "'client': client_ray.is_connected()}))\n"
            "runtime.shutdown()")
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
    joined = json.loads(probe.outputs[0]["text"].strip().splitlines()[-1])
    assert joined == {"kind": "client", "token": True, "mode": "token", "client": True}
    # and the figures a research notebook promises were drawn
    if path.stem == "research_pipeline":
        images = [o for c in nb.cells for o in c.get("outputs", [])
                  if "image/png" in o.get("data", {})]
        assert len(images) >= 3
        assert (tmp_path / "data" / "reports" / "pipeline.html").stat().st_size > 10_000
    print(f"{path.stem}: {sum(timings):.1f} s over {len(timings)} cells")
