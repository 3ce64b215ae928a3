"""Task logs over HTTP and the WebSocket, attacked as a token holder would: another
owner's log is the same 404 (or socket error) as a random id, lines holding markup come
back as the same text, queries are bounded, follow streams end and are limited per owner.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from pydantic import BaseModel

from raytasks import TaskExecutionContext, register_task_type
from tests.conftest import wait_for
from tests.httpserver import TOKENS, auth

MARKUP = ['<script>window.__pwned=1</script>', '<img src=x onerror="window.__pwned=2">',
          '"><svg onload=window.__pwned=3>', "&lt;b&gt;escaped&lt;/b&gt;"]


class ChattyParams(BaseModel):
    release: str | None = None  # a file whose existence lets the handler finish
    fail: bool = False


def chatty(params: ChattyParams, ctx: TaskExecutionContext) -> dict[str, int]:
    """Prints markup and numbered lines; waits for ``release`` (bounded) between them."""
    for line in MARKUP:
        print(line)
    print("to stderr", file=sys.stderr)
    if params.release:
        deadline = time.time() + 60
        while not Path(params.release).exists() and time.time() < deadline:
            ctx.check_cancelled()
            time.sleep(0.05)
    for i in range(5):
        print(f"after release {i}")
    if params.fail:
        raise RuntimeError("chatty failed")
    return {"lines": 5}


def _run(api: Any, who: str, **params: Any) -> dict[str, Any]:
    with httpx.Client(base_url=api.url, headers=auth(who)) as c:
        r = c.post("/tasks", json={"name": "chatty", "task_type": "chatty",
                                   "max_retries": 0, "parameters": params})
        assert r.status_code == 201, r.text
        return dict(r.json())


def _wait_status(c: httpx.Client, task_id: str, *statuses: str) -> dict[str, Any]:
    return dict(wait_for(lambda: (t := c.get(f"/tasks/{task_id}").json())["status"]
                         in statuses and t, timeout_s=60, what=f"status in {statuses}"))


def test_logs_are_the_owners_alone_and_lines_come_back_as_text(api: Any) -> None:
    register_task_type("chatty", chatty, params_model=ChattyParams, workers=1,
                       runtime=api.service)
    with httpx.Client(base_url=api.url, headers=auth("alice")) as alice, \
            httpx.Client(base_url=api.url, headers=auth("bob")) as bob, \
            httpx.Client(base_url=api.url, headers=auth("root")) as root:
        # Given alice's task that printed markup and then failed
        task = _run(api, "alice", fail=True)
        _wait_status(alice, task["id"], "FAILED")
        page = alice.get(f"/tasks/{task['id']}/logs").json()
        # Then its lines are there in order, as the same text the handler printed
        lines = [(r["stream"], r["line"]) for r in page["lines"]]
        assert [text for stream, text in lines if stream == "stdout"][:4] == MARKUP
        assert ("stderr", "to stderr") in lines
        assert any("RuntimeError: chatty failed" in text for _, text in lines)
        assert page["complete"] is True and page["status"] == "FAILED"
        assert page["next_after"] == page["lines"][-1]["id"]
        # And pages of two walk the same lines, one attempt selects its own
        walked, after = [], 0
        while True:
            part = alice.get(f"/tasks/{task['id']}/logs",
                             params={"after": after, "limit": 2}).json()
            walked += part["lines"]
            after = part["next_after"]
            if part["complete"]:
                break
        assert walked == page["lines"]
        assert alice.get(f"/tasks/{task['id']}/logs", params={"attempt": 1}).json()["lines"] \
            == []
        # When bob asks for her log, paged or followed, and for a random id's
        for params in ({}, {"follow": "true"}, {"attempt": 0, "after": 1}):
            on_theirs = bob.get(f"/tasks/{task['id']}/logs", params=params)
            on_random = bob.get(f"/tasks/{'f' * 32}/logs", params=params)
            # Then both are the same 404
            assert on_theirs.status_code == on_random.status_code == 404
            assert on_theirs.json()["message"].replace(task["id"], "X") == \
                on_random.json()["message"].replace("f" * 32, "X")
        assert root.get(f"/tasks/{task['id']}/logs").json()["lines"] == page["lines"]
        # Bad queries are a 422 naming the parameter
        for params, field in [({"attempt": -1}, "attempt"), ({"after": -1}, "after"),
                              ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                              ({"after": 2**63}, "after"), ({"timeout_s": 0}, "timeout_s"),
                              ({"timeout_s": 1e9}, "timeout_s"), ({"follow": "maybe"},
                                                                 "follow")]:
            r = alice.get(f"/tasks/{task['id']}/logs", params=params)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == \
                f"query.{field}", (params, r.text)


def _ndjson(response: httpx.Response) -> Any:
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def test_a_follow_stream_sends_lines_as_they_come_and_ends_when_the_task_does(
        api: Any, tmp_path: Path) -> None:
    register_task_type("chatty", chatty, params_model=ChattyParams, workers=1,
                       runtime=api.service)
    release = tmp_path / "release"
    task = _run(api, "alice", release=str(release))
    with httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice:
        _wait_status(alice, task["id"], "RUNNING")
        # Given a follow stream on the running task
        with alice.stream("GET", f"/tasks/{task['id']}/logs",
                          params={"follow": "true"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            rows = _ndjson(stream)
            # When the lines before the wait arrive, Then the task is still running
            first: list[dict[str, Any]] = []
            while not first or first[-1].get("line") != "to stderr":
                first.append(next(rows))
            assert [r["line"] for r in first if r.get("stream") == "stdout"] == MARKUP
            assert alice.get(f"/tasks/{task['id']}").json()["status"] == "RUNNING"
            # And when it is released, the rest come and the stream ends with its status
            release.touch()
            rest = list(rows)
        end = rest[-1]
        assert end["end"] == "finished" and end["status"] == "COMPLETED"
        lines = [r["line"] for r in first + rest[:-1] if "line" in r]
        assert [f"after release {i}" for i in range(5)] == \
            [x for x in lines if x.startswith("after release")]
        ids = [r["id"] for r in first + rest[:-1] if "id" in r]
        assert ids == sorted(set(ids))  # every line once, in order
        assert end["next_after"] == ids[-1]
        # A finished task's stream sends what is left and ends at once
        again = list(_ndjson(alice.get(f"/tasks/{task['id']}/logs",
                                       params={"follow": "true", "after": ids[-3]})))
        assert [r["id"] for r in again[:-1]] == ids[-2:] and again[-1]["end"] == "finished"


def test_follow_streams_are_limited_per_owner_and_time(api: Any, tmp_path: Path) -> None:
    register_task_type("chatty", chatty, params_model=ChattyParams, workers=1,
                       runtime=api.service)
    task = _run(api, "alice", release=str(tmp_path / "never"))
    url = f"/tasks/{task['id']}/logs"
    with httpx.Client(base_url=api.url, headers=auth("alice"), timeout=60) as alice, \
            httpx.Client(base_url=api.url, headers=auth("root"), timeout=60) as root:
        _wait_status(alice, task["id"], "RUNNING")
        # Given alice holding eight follow streams (her limit)
        streams = [alice.stream("GET", url, params={"follow": "true"}) for _ in range(8)]
        opened = [s.__enter__() for s in streams]
        assert all(s.status_code == 200 for s in opened)
        # When she opens a ninth, Then 429 names the limit
        r = alice.get(url, params={"follow": "true"})
        assert r.status_code == 429 and r.json()["limit"] == "live_log_readers"
        # And the admin (another owner) still gets one
        with root.stream("GET", url, params={"follow": "true", "timeout_s": 1}) as theirs:
            assert theirs.status_code == 200
            # which ends by itself after its timeout, saying so
            assert list(_ndjson(theirs))[-1]["end"] == "timeout"
        # When she closes hers, the slots come back
        for s in streams:
            s.__exit__(None, None, None)
        wait_for(lambda: alice.get(url, params={"follow": "true", "timeout_s": 1})
                 .status_code == 200, what="the closed streams' slots to be freed")
        alice.post(f"/tasks/{task['id']}/cancel")


async def _socket_messages(url: str, hello: dict[str, Any], until: Any,
                           later: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(hello))
        for message in later or []:
            await ws.send(json.dumps(message))
        while not until(got):
            got.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=30)))
    return got


def test_log_lines_over_the_websocket_are_the_callers_own(api: Any) -> None:
    register_task_type("chatty", chatty, params_model=ChattyParams, workers=1,
                       runtime=api.service)
    with httpx.Client(base_url=api.url, headers=auth("alice")) as alice:
        mine = _run(api, "alice", fail=True)
        theirs = _run(api, "bob")
        _wait_status(alice, mine["id"], "FAILED")
    random_id = "f" * 32
    # When alice's hello asks for her task's log, bob's, and a random id's
    got = asyncio.run(_socket_messages(api.ws_url, {
        "token": TOKENS["alice"], "logs": [mine["id"], theirs["id"], random_id]},
        until=lambda m: any(x.get("kind") == "log_end" for x in m)))
    # Then her lines come as "log" messages with the same text, then "log_end"
    logs = [m for m in got if m.get("kind") == "log"]
    assert [m["line"] for m in logs if m["stream"] == "stdout"][:4] == MARKUP
    assert {m["task_id"] for m in logs} == {mine["id"]}
    end = next(m for m in got if m.get("kind") == "log_end")
    assert end["status"] == "FAILED" and end["next_after"] == logs[-1]["id"]
    # And bob's task and the random id get the same error
    errors = {m["task_id"]: m for m in got if m.get("kind") == "log_error"}
    assert set(errors) == {theirs["id"], random_id}
    assert errors[theirs["id"]]["message"].replace(theirs["id"], "X") == \
        errors[random_id]["message"].replace(random_id, "X")
    # A later message follows from a line on, and a bad one closes the socket with why
    later = asyncio.run(_socket_messages(api.ws_url, {"token": TOKENS["alice"]}, later=[
        {"logs": [mine["id"]], "logs_after": {mine["id"]: logs[-2]["id"]}}],
        until=lambda m: any(x.get("kind") == "log_end" for x in m)))
    assert [m["id"] for m in later if m.get("kind") == "log"] == [logs[-1]["id"]]

    async def closed_by(message: Any, hello: dict[str, Any] | None = None) -> tuple[int, str]:
        async with websockets.connect(api.ws_url) as ws:
            await ws.send(json.dumps(hello or {"token": TOKENS["alice"]}))
            if message is not None:
                await ws.send(message)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), timeout=15)
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None
                return closed.rcvd.code, closed.rcvd.reason

    for message, code, reason in [
            (json.dumps({"logs": ["x"] * 21}), 1008, "logs"),
            (json.dumps({"logs": ["x" * 201]}), 1008, "logs"),
            (json.dumps({"logs": [1]}), 1008, "logs"),
            (json.dumps({"logs": [], "token": "again"}), 1008, "token"),
            (json.dumps({"logs": [], "logs_after": {"x": -1}}), 1008, "logs_after"),
            ('{"logs": [], "logs_after": {"x": NaN}}', 1003, "NaN"),
            (b"\x00binary", 1003, "JSON text")]:
        got_code, got_reason = asyncio.run(closed_by(message))
        assert got_code == code and reason in got_reason, (message, got_code, got_reason)
    # And the hello itself is bounded the same way
    got_code, got_reason = asyncio.run(closed_by(None, {"token": TOKENS["alice"],
                                                        "logs": ["x"] * 21}))
    assert got_code == 1008 and "logs" in got_reason
