"""Issue 7, the "low" and "fuzz by hand" rows, attacked over HTTP and WebSocket: the edge
answers bad input with 4xx, never 5xx, hides other owners and its own internals, and a
5xx names a request id that the server log has with the traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest
import ray
import websockets

from tests.conftest import wait_for
from tests.httpserver import TOKENS, auth


def _sleepy(seconds: float, **kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": seconds}, **kw}


def test_executors_show_other_owners_running_tasks_as_hidden(api: Any) -> None:
    with httpx.Client(base_url=api.url) as c:
        task = c.post("/tasks", json=_sleepy(30), headers=auth("alice")).json()
        wait_for(lambda: c.get(f"/tasks/{task['id']}", headers=auth("alice")).json()["status"]
                 == "RUNNING", what="alice's task running")

        def current(who: str) -> list[Any]:
            rows = c.get("/stats/executors", headers=auth(who)).json()
            return [r.get("current") for r in rows if r["task_type"] == "sleepy"]

        assert current("bob") == ["hidden"]
        assert current("alice") == [task["id"]] and current("root") == [task["id"]]
        assert all("pid" not in r for r in c.get("/stats/executors", headers=auth("bob")).json())
        assert task["id"] not in c.get("/metrics", headers=auth("bob")).text
        assert task["id"] not in c.get("/stats/queues", headers=auth("bob")).text
        c.post(f"/tasks/{task['id']}/cancel", headers=auth("alice"))


def test_a_failed_task_returns_no_traceback_and_no_server_path(api: Any) -> None:
    with httpx.Client(base_url=api.url, headers=auth("alice")) as c:
        task = c.post("/tasks", json=_sleepy(0, max_retries=0, parameters={
            "fail_attempts": 1, "marker_dir": "/nonexistent/dir"})).json()
        done = wait_for(lambda: (t := c.get(f"/tasks/{task['id']}").json())["status"]
                        == "FAILED" and t, what="the task to fail")
        assert done["error"]["traceback"] is None
        # the handler's own message named a server path: it is not passed on
        assert "/nonexistent" not in done["error"]["message"]
        assert "<path>" in done["error"]["message"]
        assert "Traceback" not in c.get(f"/tasks/{task['id']}").text


# (each list below is one test over one service: starting a service per case costs more
# than every case together)
BAD_PATCHES = [
    ({"tags": ["a,b"]}, "tags"), ({"tags": ["x" * 65]}, "tags"),
    ({"tags": [f"t{i}" for i in range(21)]}, "tags"), ({"tags": ["line\u2028break"]}, "tags"),
    ({"name": "new\nline"}, "name"), ({"notify": ["a@b.c\r\nBcc: x@y.z"]}, "notify"),
    ({"owner": "bob"}, "owner"),
]


def test_patch_is_validated_like_create(api: Any) -> None:
    with httpx.Client(base_url=api.url, headers=auth("alice")) as c:
        task = c.post("/tasks", json=_sleepy(0)).json()
        for change, field in BAD_PATCHES:
            r = c.patch(f"/tasks/{task['id']}", json=change)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
        assert c.get(f"/tasks/{task['id']}").json()["tags"] == []


BAD_BODIES = [
    b'{"name": "n", "task_type": "sleepy", "parameters": {"seconds": NaN}}',
    b'{"name": "n", "task_type": "sleepy", "parameters": {"seconds": Infinity}}',
    b'{"name": "n", "task_type": "sleepy", "parameters": {"seconds": -Infinity}}',
    b'{"name": "n", "task_type": "sleepy", "parameters": {"seconds": 1e400}}',
    b'{"name": "\\ud800", "task_type": "sleepy"}',
    b'{"name": "n", "task_type": "sleepy", "parameters": {"\\udfff": 1}}',
    b'{"name": "n", "task_type": "sleepy", "tags": ["\\ud83d"]}',
    b'{"name": "n", "task_type": "sleepy", "parameters": {"x": ' + b"[" * 500 + b"]" * 500
    + b"}}",
    b'{"name": "n", "task_type": "sleepy", "parameters": {"x": ' + b"[" * 60_000 + b"}}",
    b'{"name": "\xff\xfe", "task_type": "sleepy"}',
    b'{"name": "n", "task_type": "sleepy", "parameters": {"n": 1' + b"0" * 5000 + b"}}",
    b"{not json",
]


def test_malformed_json_is_a_422(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url, headers=auth("alice")) as c:
        for body in BAD_BODIES:
            for path in ("/tasks", "/tasks/batch"):
                wrapped = body if path == "/tasks" else b"[" + body + b"]"
                r = c.post(path, content=wrapped, headers={"Content-Type": "application/json"})
                assert r.status_code == 422, (body[:80], path, r.status_code, r.text[:300])
                assert r.json()["error"] == "InvalidParametersError"
        assert c.get("/tasks").json()["total"] == 0


def test_an_oversized_body_is_a_413(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url, headers=auth("alice")) as c:
        big = json.dumps(_sleepy(0, parameters={"blob": "x" * 100_000})).encode()
        assert c.post("/tasks", content=big).status_code == 413

        def chunks() -> Any:  # streamed, with no Content-Length to refuse it early
            yield b'{"name": "n", "task_type": "sleepy", "parameters": {"blob": "'
            for _ in range(100):
                yield b"x" * 1000
            yield b'"}}'

        assert c.post("/tasks", content=chunks()).status_code == 413


BAD_QUERIES: list[dict[str, Any]] = [
    {"limit": 0}, {"limit": -5}, {"limit": 10**9}, {"offset": -1}, {"offset": 2**63},
    {"order_by": "id; DROP TABLE tasks"}, {"status": "NOPE"}, {"priority": 7},
    {"text": "x" * 1000}, {"tags": "a,b"},
]


def test_bad_query_parameters_are_a_422(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url, headers=auth("alice")) as c:
        for params in BAD_QUERIES:
            r = c.get("/tasks", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.json()["errors"][0]["field"].startswith("query")


def test_every_response_carries_a_request_id_and_security_headers(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url) as c:
        responses = [c.get("/health"), c.get("/tasks"), c.get("/tasks/nope",
                                                                 headers=auth("alice")),
                     c.post("/tasks", content=b"{", headers=auth("alice")), c.get("/")]
        ids = [r.headers.get("x-request-id") for r in responses]
        assert all(ids) and len(set(ids)) == len(ids)
        for r in responses:
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        page_csp = responses[-1].headers["content-security-policy"]
        assert "script-src 'self'" in page_csp and "unsafe-inline" not in page_csp
        assert "<script>" not in responses[-1].text  # no inline script to allow


def test_a_5xx_names_a_request_id_the_log_has_with_the_traceback(
        api: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given the executor engine is gone (an internal failure, not the caller's fault)
    ray.kill(ray.get_actor("engine", namespace=api.service.settings.namespace),
             no_restart=True)
    with caplog.at_level(logging.ERROR, logger="raytasks.server"), \
            httpx.Client(base_url=api.url, headers=auth("alice")) as c:
        r = c.get("/stats/executors")
    # Then the answer is a 5xx naming its request id, and nothing of the server
    assert r.status_code >= 500
    request_id = r.headers["x-request-id"]
    assert r.json()["request_id"] == request_id and request_id in r.json()["message"]
    assert "Traceback" not in r.text and "/" not in r.json()["message"]
    # And the server log has the id with the traceback
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert logged and logged[0].exc_info is not None


async def _closed_with(url: str, hello: Any | None) -> tuple[int | None, str, float]:
    started = time.monotonic()
    async with websockets.connect(url) as ws:
        if hello is not None:
            await ws.send(hello)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), timeout=15)
        except websockets.ConnectionClosed as closed:
            rcvd = closed.rcvd
            return (rcvd.code if rcvd else None, rcvd.reason if rcvd else "",
                    time.monotonic() - started)


BAD_HELLOS: list[tuple[Any, int, str]] = [
    ("not json", 1003, "not JSON"),
    (b"\x00\x01binary", 1003, "JSON text"),
    ('{"token": 5}', 1008, "token"),
    ('{"token": "t", "after_id": -1}', 1008, "after_id"),
    ('{"token": "t", "filter": {"status": ["NOPE"]}}', 1008, "filter.status"),
    ('{"token": "t", "filter": "everything"}', 1008, "filter"),
    ('{"token": "t", "surprise": 1}', 1008, "surprise"),
    ('[1, 2]', 1008, "invalid hello"),
    ('{"token": "t", "after_id": NaN}', 1003, "NaN"),
    ('{"token": "wrong"}', 1008, "valid token"),
    ('{"after_id": 0}', 1008, "valid token"),  # no token and no session cookie
]


def test_malformed_websocket_hellos_are_closed_with_a_reason(shared_api: Any) -> None:
    for hello, code, reason in BAD_HELLOS:
        got_code, got_reason, _ = asyncio.run(_closed_with(shared_api.ws_url, hello))
        assert (got_code, reason in got_reason) == (code, True), (hello, got_code, got_reason)


def test_a_socket_that_never_authenticates_is_closed(shared_api: Any) -> None:
    code, reason, waited = asyncio.run(_closed_with(shared_api.ws_url, None))
    assert code == 1008 and "no hello" in reason
    assert 4.0 < waited < 10.0


def test_a_valid_hello_still_subscribes(shared_api: Any) -> None:
    async def hello() -> dict[str, Any]:
        async with websockets.connect(shared_api.ws_url) as ws:
            await ws.send(json.dumps({"token": TOKENS["alice"], "after_id": 0,
                                      "filter": {"status": ["COMPLETED"]}}))
            return dict(json.loads(await ws.recv()))

    assert asyncio.run(hello()) == {"subscribed": True, "after_id": 0}


def test_an_address_guessing_tokens_is_slowed_but_a_valid_token_passes(make_api: Any) -> None:
    from raytasks.settings import ApiSettings
    from tests.httpserver import api_tokens

    api = make_api(sleepy_workers=0, api=ApiSettings(tokens=api_tokens(), max_wrong_tokens=3,
                                                     wrong_token_delay_s=0.5))
    with httpx.Client(base_url=api.url) as c:
        # Given three wrong guesses from one address (bearer, dashboard login, socket hello)
        assert c.get("/tasks", headers={"Authorization": "Bearer guess-1"}).status_code == 401
        assert c.post("/session", json={"token": "guess-2"}).status_code == 401
        code, reason, _ = asyncio.run(_closed_with(api.ws_url, '{"token": "guess-3"}'))
        assert (code, "valid token" in reason) == (1008, True)
        # When it guesses again, each guess is refused with 429, after a delay
        started = time.monotonic()
        refused = c.get("/tasks", headers={"Authorization": "Bearer guess-4"})
        assert time.monotonic() - started >= 0.45
        assert refused.status_code == 429 and refused.json()["error"] == "TooManyWrongTokens"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert c.post("/session", json={"token": "guess-5"}).status_code == 429
        code, reason, _ = asyncio.run(_closed_with(api.ws_url, '{"token": "guess-6"}'))
        assert (code, "too many wrong tokens" in reason) == (1008, True)
        # Then a valid token from the same address is still let in, everywhere
        assert c.get("/tasks", headers=auth("alice")).status_code == 200
        assert c.post("/session", json={"token": TOKENS["alice"]}).status_code == 200
        assert asyncio.run(_subscribed(api.ws_url, TOKENS["alice"]))
        # And what needs no token stays open
        assert c.get("/health").status_code == 200


async def _subscribed(url: str, token: str) -> bool:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"token": token}))
        return bool(json.loads(await ws.recv()).get("subscribed"))
