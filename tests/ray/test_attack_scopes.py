"""Scoped tokens (issue item 9), attacked over HTTP: every route declares the scope it
needs in the OpenAPI document, and refuses a token without it; a submit token limited to
task types submits only those."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
import websockets

from tests.httpserver import auth

SCOPED = {  # name: (token, scopes, task types)
    "reader": ("reader-token", ["read"], None),
    "submitter": ("submitter-token", ["submit"], None),
    "sleepy_only": ("sleepy-only-token", ["read", "submit"], ["sleepy"]),
}
#: a token that lacks each scope, and one that holds it alone (admin: the admin's)
LACKING = {"read": "submitter", "submit": "reader", "admin": "alice"}
HOLDING = {"read": "reader", "submit": "submitter", "admin": "root"}
#: routes every valid caller may use, or that take their token another way
UNSCOPED = {("post", "/session"), ("get", "/session"), ("delete", "/session"),
            ("delete", "/sessions")}
PUBLIC = {("get", "/health")}


def _sleepy(**kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": 0}, **kw}


def _headers(who: str) -> dict[str, str]:
    if who in SCOPED:
        return {"Authorization": f"Bearer {SCOPED[who][0]}"}
    return auth(who)


@pytest.fixture(scope="module")
def scoped_api(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from raytasks.server.auth import hash_token
    from raytasks.settings import ApiSettings, ApiToken
    from tests.conftest import _services
    from tests.httpserver import api_tokens, start_api

    extra = [ApiToken(sha256=hash_token(token), owner="erin", scopes=scopes,
                      task_types=types) for token, scopes, types in SCOPED.values()]
    with _services(tmp_path_factory.mktemp("scopes") / "data") as make:
        server = start_api(make, sleepy_workers=0, api=ApiSettings(
            tokens=[*api_tokens(), *extra], max_body_bytes=64 * 1024,
            max_wrong_tokens=1_000_000))
        try:
            yield server
        finally:
            server.close()


def _declared(operation: dict[str, Any]) -> set[str]:
    return {scope for requirement in operation.get("security", [])
            for scopes in requirement.values() for scope in scopes}


def test_every_route_refuses_a_token_without_the_scope_it_declares(scoped_api: Any) -> None:
    with httpx.Client(base_url=scoped_api.url, timeout=30) as c:
        spec = c.get("/openapi.json", headers=auth("root")).json()
        walked = 0
        for path, operations in spec["paths"].items():
            url = re.sub(r"\{[^}]+\}", "x", path)
            for method, operation in operations.items():
                if (method, path) in PUBLIC:
                    continue
                declared = _declared(operation)
                # Given a route: it declares one scope, or is one that takes any token
                if (method, path) in UNSCOPED:
                    assert declared == set(), (method, path)
                    assert c.request(method.upper(), url).status_code in (401, 422)
                    continue
                assert len(declared) == 1, (method, path, operation.get("security"))
                scope = declared.pop()
                body = {} if method in ("post", "patch", "put") else None
                # When a token without that scope calls it, Then it is refused, naming it
                r = c.request(method.upper(), url, json=body, headers=_headers(LACKING[scope]))
                assert r.status_code == 403, (method, path, r.status_code, r.text)
                assert r.json()["error"] == "MissingScope" and scope in r.json()["message"]
                # And a token holding it is not refused for its scope
                r = c.request(method.upper(), url, json=body, headers=_headers(HOLDING[scope]))
                assert r.status_code != 403, (method, path, r.text)
                walked += 1
        assert walked >= 20


def test_a_read_token_reads_and_a_submit_token_submits(scoped_api: Any) -> None:
    with httpx.Client(base_url=scoped_api.url, timeout=30) as c:
        # a monitoring token reads, and changes nothing
        assert c.get("/tasks", headers=_headers("reader")).status_code == 200
        assert c.get("/metrics", headers=_headers("reader")).status_code == 200
        assert c.post("/tasks", json=_sleepy(), headers=_headers("reader")).status_code == 403
        # a submit token submits, and reads nothing
        made = c.post("/tasks", json=_sleepy(), headers=_headers("submitter"))
        assert made.status_code == 201 and made.json()["owner"] == "erin"
        task_id = made.json()["id"]
        assert c.get(f"/tasks/{task_id}", headers=_headers("submitter")).status_code == 403
        assert c.post(f"/tasks/{task_id}/cancel",
                      headers=_headers("submitter")).status_code == 200
        # neither reaches another owner's task, nor the admin's routes
        theirs = c.post("/tasks", json=_sleepy(), headers=auth("alice")).json()["id"]
        assert c.get(f"/tasks/{theirs}", headers=_headers("reader")).status_code == 404
        assert c.post(f"/tasks/{theirs}/cancel",
                      headers=_headers("submitter")).status_code == 404
        assert c.get("/audit", headers=_headers("reader")).status_code == 403
        # and a dashboard session carries the token's scopes, no more
        signed = c.post("/session", json={"token": SCOPED["reader"][0]})
        assert signed.status_code == 200 and signed.json()["scopes"] == ["read"]
        assert c.post("/tasks", json=_sleepy(), headers={
            "X-CSRF-Token": signed.json()["csrf"]}).status_code == 403
        c.cookies.clear()
        assert c.post("/session", json={"token": SCOPED["submitter"][0]}).status_code == 403

    async def hello(token: str) -> tuple[Any, int | None, str]:
        try:
            async with websockets.connect(scoped_api.ws_url) as ws:
                await ws.send(json.dumps({"token": token}))
                first = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
                if first.get("subscribed"):
                    return first, None, ""
                await asyncio.wait_for(ws.recv(), timeout=15)
        except websockets.ConnectionClosed as closed:
            return None, closed.rcvd.code if closed.rcvd else None, \
                closed.rcvd.reason if closed.rcvd else ""
        return None, None, ""

    assert asyncio.run(hello(SCOPED["reader"][0]))[0]["subscribed"] is True
    _, code, reason = asyncio.run(hello(SCOPED["submitter"][0]))
    assert code == 1008 and "read" in reason


def test_a_submit_token_limited_to_task_types_submits_only_those(scoped_api: Any) -> None:
    limited = _headers("sleepy_only")
    prediction = {"name": "p", "task_type": "prediction",
                  "parameters": {"stock_code": "000001.SZ", "days": 5}}
    with httpx.Client(base_url=scoped_api.url, timeout=30) as c:
        before = c.get("/tasks", headers=limited).json()["total"]
        # Given a token that may submit only sleepy tasks
        assert c.post("/tasks", json=_sleepy(), headers=limited).status_code == 201
        # When it submits another type, alone, in a batch, or as a schedule's template
        alone = c.post("/tasks", json=prediction, headers=limited)
        batch = c.post("/tasks/batch", json=[_sleepy(), prediction], headers=limited)
        schedule = c.post("/schedules", headers=limited, json={
            "name": "nightly", "template": prediction,
            "rule": {"trading": {"every": "day", "at": "15:30"}}})
        # Then each is refused naming the type, and nothing of the batch is made
        for r in (alone, batch, schedule):
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "MissingScope" and "prediction" in r.json()["message"]
        assert c.get("/tasks", headers=limited).json()["total"] == before + 1
        # And a task of another type of the same owner is not its to change
        other = c.post("/tasks", json=prediction, headers=_headers("submitter")).json()["id"]
        assert c.post(f"/tasks/{other}/cancel", headers=limited).status_code == 403
        assert c.delete(f"/tasks/{other}", headers=limited).status_code == 403
        # (reading it is the read scope's business)
        assert c.get(f"/tasks/{other}", headers=limited).status_code == 200
