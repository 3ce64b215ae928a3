"""The HTTP API and WebSocket stream with real clients (httpx, websockets)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from tests.conftest import wait_for
from tests.httpserver import TOKENS, auth

PREDICTION = {"name": "p", "task_type": "prediction",
              "parameters": {"stock_code": "000001.SZ", "days": 5}}


def _sleepy(seconds: float, **kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": seconds}, **kw}


def test_without_a_token_nothing_but_health(api: Any) -> None:
    with httpx.Client(base_url=api.url) as c:
        assert c.get("/health").json() == {"status": "ok"}
        for method, path in [("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/metrics"),
                             ("GET", "/tasks/x"), ("GET", "/stats/queues"),
                             ("GET", "/openapi.json")]:
            r = c.request(method, path)
            assert r.status_code == 401, (method, path)
        r = c.get("/tasks", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"] == "Unauthorized"


def test_owners_see_only_their_own_tasks(api: Any) -> None:
    with httpx.Client(base_url=api.url) as c:
        mine = c.post("/tasks", json=PREDICTION, headers=auth("alice"))
        assert mine.status_code == 201 and mine.json()["owner"] == "alice"
        task_id = mine.json()["id"]
        assert c.get(f"/tasks/{task_id}", headers=auth("bob")).status_code == 404
        assert c.post(f"/tasks/{task_id}/cancel", headers=auth("bob")).status_code == 404
        assert c.get("/tasks", headers=auth("bob")).json()["total"] == 0
        assert c.get("/tasks", headers=auth("alice")).json()["total"] == 1
        assert c.get(f"/tasks/{task_id}", headers=auth("root")).status_code == 200
        # an owner cannot create tasks in another owner's name
        forged = c.post("/tasks", json={**PREDICTION, "owner": "alice"}, headers=auth("bob"))
        assert forged.json()["owner"] == "bob"


def test_errors_are_json_with_the_right_status(api: Any) -> None:
    with httpx.Client(base_url=api.url, headers=auth("alice")) as c:
        r = c.post("/tasks", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "InvalidParametersError"
        r = c.post("/tasks", json={**PREDICTION, "parameters": {"stock_code": "000001"}})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "parameters.stock_code"
        r = c.post("/tasks", json={**PREDICTION, "priority": 9})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "priority"
        r = c.post("/tasks", json={**PREDICTION, "task_type": "astrology"})
        assert r.status_code == 422 and "unknown task type 'astrology'" in r.json()["message"]
        r = c.post("/tasks", json={**PREDICTION, "name": "x" * 100_000})
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLargeError"
        assert c.get("/tasks/nope").status_code == 404
        done = c.post("/tasks", json=_sleepy(0.0)).json()
        wait_for(lambda: c.get(f"/tasks/{done['id']}").json()["status"] == "COMPLETED")
        r = c.post(f"/tasks/{done['id']}/cancel")
        assert r.status_code == 409 and "is COMPLETED" in r.json()["message"]


def test_full_queue_is_429(api: Any) -> None:
    with httpx.Client(base_url=api.url, headers=auth("alice")) as c, \
            httpx.Client(base_url=api.url, headers=auth("bob")) as bob:
        blocker = c.post("/tasks", json=_sleepy(30)).json()
        wait_for(lambda: c.get(f"/tasks/{blocker['id']}").json()["status"] == "RUNNING")
        # each owner fills at most its share of the queue (half); together they fill it
        assert c.post("/tasks/batch", json=[_sleepy(0)] * 10).status_code == 201
        assert bob.post("/tasks/batch", json=[_sleepy(0)] * 10).status_code == 201
        r = httpx.post(f"{api.url}/tasks", json=_sleepy(0), headers=auth("root"))
        assert r.status_code == 429 and "is full" in r.json()["message"]
        c.post(f"/tasks/{blocker['id']}/cancel")


def test_crud_progress_stats_and_metrics(api: Any) -> None:
    with httpx.Client(base_url=api.url, headers=auth("alice")) as c:
        created = c.post("/tasks/batch", json=[_sleepy(0.3, priority=1), _sleepy(0.0)])
        assert created.status_code == 201
        first, second = created.json()
        wait_for(lambda: all(c.get(f"/tasks/{t['id']}").json()["status"] == "COMPLETED"
                             for t in (first, second)), what="both tasks")
        progress = c.get(f"/tasks/{first['id']}/progress").json()
        assert progress["percentage"] == 1.0 and progress["status"] == "COMPLETED"
        page = c.get("/tasks", params={"status": "COMPLETED", "limit": 1}).json()
        assert page["total"] == 2 and len(page["items"]) == 1
        renamed = c.patch(f"/tasks/{first['id']}", json={"name": "renamed", "tags": ["q"]})
        assert renamed.json()["name"] == "renamed"
        assert c.get("/tasks", params={"tags": "q"}).json()["total"] == 1
        retried = c.post(f"/tasks/{second['id']}/cancel")
        assert retried.status_code == 409
        assert c.delete(f"/tasks/{second['id']}").status_code == 204
        assert c.get(f"/tasks/{second['id']}").status_code == 404
        queues = c.get("/stats/queues").json()
        assert queues[0]["waiting"] == {"HIGH": 0, "MEDIUM": 0, "LOW": 0}
        assert "paths" in c.get("/openapi.json").json()
        metrics = wait_for(lambda: (m := c.get("/metrics").text)
                           and "raytasks_tasks_finished_total{" in m and m,
                           what="finished tasks in the metrics")
        assert 'raytasks_queue_depth{priority="HIGH",queue="default"} 0.0' in metrics
        assert "raytasks_task_wait_seconds_bucket" in metrics
        assert "raytasks_task_run_seconds_count" in metrics
        assert 'raytasks_tasks{status="COMPLETED"} 1.0' in metrics


async def _collect(url: str, hello: dict[str, Any], until: Any,
                   limit: int = 500) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(hello))
        while len(got) < limit:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            if "event_id" in message:
                got.append(message)
                if until(got):
                    break
    return got


def test_websocket_streams_status_and_throttled_progress_and_resumes(api: Any) -> None:
    with httpx.Client(base_url=api.url, headers=auth("alice")) as c:
        async def scenario() -> tuple[list[Any], list[Any]]:
            async with websockets.connect(api.ws_url) as ws:
                await ws.send(json.dumps({"token": TOKENS["alice"]}))
                assert json.loads(await ws.recv())["subscribed"] is True
                task = c.post("/tasks", json=_sleepy(1.5)).json()
                first: list[Any] = []
                # Given a client that drops the connection once the task is RUNNING
                while not any(e.get("status") == "RUNNING" for e in first):
                    m = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                    if "event_id" in m:
                        first.append(m)
            # When it reconnects from the last event id it saw
            rest = await _collect(api.ws_url, {"token": TOKENS["alice"],
                                               "after_id": first[-1]["event_id"]},
                                  until=lambda got: got[-1].get("status") == "COMPLETED")
            assert all(e["task_id"] == task["id"] for e in first + rest)
            return first, rest

        first, rest = asyncio.run(scenario())
    events = first + rest
    ids = [e["event_id"] for e in events]
    # Then it has every status change, in order, with no gap and no repeat
    assert ids == sorted(set(ids))
    assert [e["status"] for e in events if e["kind"] == "status"] == \
        ["PENDING", "RUNNING", "COMPLETED"]
    progress = [e for e in events if e["kind"] == "progress"]
    assert len(progress) >= 2
    assert [p["percentage"] for p in progress] == sorted(p["percentage"] for p in progress)
    stamps = [p["at"] for p in progress if p["percentage"] < 1]
    # throttled: the handler reports every 20 ms, the socket sends at most one per 0.5 s
    assert len(progress) < 1.5 / 0.5 + 3
    assert stamps == sorted(stamps)


def test_websocket_refuses_a_bad_token_and_hides_other_owners(api: Any) -> None:
    async def refused() -> dict[str, Any]:
        async with websockets.connect(api.ws_url) as ws:
            await ws.send(json.dumps({"token": "nope"}))
            return dict(json.loads(await ws.recv()))

    assert asyncio.run(refused())["error"] == "Unauthorized"
    with httpx.Client(base_url=api.url) as c:
        async def bob_sees() -> list[Any]:
            async with websockets.connect(api.ws_url) as ws:
                await ws.send(json.dumps({"token": TOKENS["bob"]}))
                await ws.recv()
                c.post("/tasks", json=_sleepy(0.0), headers=auth("alice"))
                mine = c.post("/tasks", json=_sleepy(0.0), headers=auth("bob")).json()
                seen = []
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
                    if "event_id" in m:
                        seen.append(m)
                        if m["task_id"] == mine["id"] and m.get("status") == "COMPLETED":
                            return seen

        seen = asyncio.run(bob_sees())
    assert {e["owner"] for e in seen} == {"bob"}
