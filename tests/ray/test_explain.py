"""'Why is my task waiting?' over HTTP and the CLI, from the manager's state: the causes a
test sets up are the causes named, and listed tasks carry their predicted start and end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import websockets

from tests.conftest import wait_for
from tests.httpserver import TOKENS, auth

RAYTASKS = str(Path(sys.executable).parent / "raytasks")


async def _first_eta(url: str, token: str, wait_s: float = 30.0) -> dict[str, Any]:
    """The first ETA message a socket with ``token`` gets within ``wait_s``, by task id."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"token": token}))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=wait_s))
            except TimeoutError:
                break
            if message.get("kind") == "eta":
                return {t["task_id"]: t for t in message["tasks"]}
    return {}


def _sleepy(seconds: float, **kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": seconds}, **kw}


def test_a_waiting_task_is_explained_and_listed_with_its_eta(make_api: Any) -> None:
    api = make_api(sleepy_workers=1)
    with httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice, \
            httpx.Client(base_url=api.url, headers=auth("bob"), timeout=60) as bob:
        # Given the one executor busy with a long task, and two more queued behind it
        running = alice.post("/tasks", json=_sleepy(20)).json()
        wait_for(lambda: alice.get(f"/tasks/{running['id']}").json()["status"] == "RUNNING",
                 what="the long task to start")
        first = alice.post("/tasks", json=_sleepy(0.1)).json()
        second = alice.post("/tasks", json=_sleepy(0.1, priority=3)).json()
        # When alice asks why the LOW one waits
        said = alice.get(f"/tasks/{second['id']}/explain").json()
        # Then it is behind one task, every executor of its type is busy, and it has a
        # predicted start after the running task's predicted end
        assert said["status"] == "PENDING" and said["place"] == 2
        assert said["ahead"] == {"MEDIUM": 1}
        assert {"behind", "executors_busy"} <= set(said["causes"]), said
        assert said["predicted_start"] and said["predicted_finish"]
        ran = alice.get(f"/tasks/{running['id']}/explain").json()
        assert ran["causes"] == ["running"] and ran["predicted_finish"]
        start = datetime.fromisoformat(said["predicted_start"])
        assert start >= datetime.fromisoformat(ran["predicted_finish"]) - timedelta(seconds=1)
        # and the list carries the same predictions for active tasks
        listed = {t["id"]: t for t in alice.get("/tasks").json()["items"]}
        assert listed[second["id"]]["predicted_start"] is not None
        assert listed[running["id"]]["predicted_finish"] is not None
        # Another owner's task is as unknown to bob as a random id
        assert bob.get(f"/tasks/{first['id']}/explain").status_code == 404
        assert bob.get("/tasks/../etc/explain").status_code in (404, 422)
        # and the CLI says the same, as sentences
        env = {**os.environ, "RAYTASKS_NAMESPACE": api.service.settings.namespace,
               "RAYTASKS_DATA_DIR": str(api.service.settings.data_dir)}
        import ray

        out = subprocess.run([RAYTASKS, "--address", ray.get_runtime_context().gcs_address,
                              "explain", second["id"], "--json"], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "behind" in json.loads(out.stdout)["causes"]
        # and the WebSocket carries the ETAs of the caller's active tasks, no one else's
        mine = asyncio.run(_first_eta(api.ws_url, TOKENS["alice"]))
        assert {running["id"], first["id"], second["id"]} <= set(mine)
        assert mine[second["id"]]["predicted_start"] is not None
        assert mine[running["id"]]["status"] == "RUNNING"
        assert not asyncio.run(_first_eta(api.ws_url, TOKENS["bob"], wait_s=5.0))
        for task in (running, first, second):
            alice.post(f"/tasks/{task['id']}/cancel")
