"""The team-scale findings on tokens and sessions, attacked over HTTP as a token holder
would, against two real ``raytasks serve`` processes on one store.

- wrong tokens lock out everyone at an address (finding 1);
- ``X-Forwarded-For`` picks the key (finding 2);
- a revoked token's dashboard session lives on, and sessions live in one process
  (findings 3 and 8);
- one user's sign-ins sign everyone out (finding 4, the session cap).

``plain`` runs with the default settings (no trusted proxy); ``proxied`` trusts the
loopback address as its reverse proxy, so a test there can speak for any client address
with ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from raytasks import tokens
from tests.cluster import free_port
from tests.conftest import wait_for

RAYTASKS = str(Path(sys.executable).parent / "raytasks")
PREDICTION = {"name": "p", "task_type": "prediction",
              "parameters": {"stock_code": "000001.SZ", "days": 5}}
COOKIE = "raytasks_session"
#: the limits both servers run with (the defaults, but for the cap and a short delay)
MAX_WRONG = 20
MAX_SIGN_INS = 10
CAP = 3
DELAY_S = 0.2


class Serve:
    """One ``raytasks serve`` process on the module's service: the same store and token
    file as every other, settings of its own from the environment."""

    def __init__(self, service: Any, log: Path, **api: str) -> None:
        import ray

        port = free_port()
        env = {**os.environ, "RAYTASKS_NAMESPACE": service.settings.namespace,
               "RAYTASKS_DATA_DIR": str(service.settings.data_dir),
               **{f"RAYTASKS_API__{name.upper()}": value for name, value in api.items()}}
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [RAYTASKS, "--address", ray.get_runtime_context().gcs_address, "serve",
                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        wait_for(self._up, timeout_s=180, what=f"raytasks serve on port {port}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"raytasks serve ended: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


@dataclass
class Servers:
    service: Any
    plain: Serve
    proxied: Serve
    token: dict[str, str]

    def bearer(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.get(who, who)}"}


@pytest.fixture(scope="module")
def servers(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    from tests.conftest import _services

    root = tmp_path_factory.mktemp("sessions")
    with _services(root / "data") as make:
        service = make()
        made = {who: tokens.create(service.settings, who, "admin" if who == "root" else
                                   "user")[0]
                for who in ("root", "alice", "bob", "carol", "dave", "erin")}
        limits = {"max_wrong_tokens": str(MAX_WRONG), "wrong_token_delay_s": str(DELAY_S),
                  "max_sign_ins_per_owner": str(MAX_SIGN_INS),
                  "max_sessions_per_owner": str(CAP)}
        plain = Serve(service, root / "plain.log", **limits)
        try:
            proxied = Serve(service, root / "proxied.log", **limits,
                            trusted_proxies='["127.0.0.1"]')
        except BaseException:
            plain.close()
            raise
        try:
            yield Servers(service, plain, proxied, made)
        finally:
            plain.close()
            proxied.close()


def _hello(url: str, hello: dict[str, Any], headers: dict[str, str] | None = None
           ) -> tuple[dict[str, Any] | None, int | None, str]:
    """The subscription (None if the server refused), then how it closed the socket."""
    async def run() -> tuple[dict[str, Any] | None, int | None, str]:
        async with websockets.connect(url, additional_headers=headers or {}) as ws:
            await ws.send(json.dumps(hello))
            first = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
            if not first.get("subscribed"):  # the refusal's reason, then the close
                await asyncio.wait_for(ws.recv(), timeout=15)
            await ws.close()
            return first, None, ""

    try:
        return asyncio.run(run())
    except websockets.ConnectionClosed as closed:
        rcvd = closed.rcvd
        return None, rcvd.code if rcvd else None, rcvd.reason if rcvd else ""


def _sign_in(c: httpx.Client, token: str, **headers: str) -> tuple[str, str]:
    """(cookie, csrf) of a new dashboard session."""
    r = c.post("/session", json={"token": token}, headers=headers)
    assert r.status_code == 200, r.text
    c.cookies.clear()  # each request below names the cookie it sends
    return r.cookies[COOKIE], r.json()["csrf"]


def _with(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={cookie}"}


def test_wrong_tokens_never_lock_a_valid_token_out(servers: Servers) -> None:
    with httpx.Client(base_url=servers.plain.url, timeout=30) as c:
        # Given 30 wrong bearer tokens from one address (127.0.0.1)
        codes, slow = [], []
        for i in range(30):
            started = time.monotonic()
            codes.append(c.get("/tasks", headers=servers.bearer(f"wrong-{i}")).status_code)
            slow.append(time.monotonic() - started >= DELAY_S * 0.9)
        # Then the first 20 are 401s, and the rest are 429s
        assert codes == [401] * MAX_WRONG + [429] * (30 - MAX_WRONG)
        # When bob presents his valid token from the same address, it is let through:
        # on the API, for the dashboard sign-in and in a WebSocket hello
        assert c.get("/tasks", headers=servers.bearer("bob")).status_code == 200
        assert c.post("/session", json={"token": servers.token["bob"]}).status_code == 200
        first, code, reason = _hello(servers.plain.ws_url, {"token": servers.token["bob"]})
        assert first is not None and first.get("subscribed") is True, (code, reason)
        # And the wrong ones past the limit were each slowed down
        assert all(slow[MAX_WRONG:])
        # And a further wrong token from it is still refused, saying when to come back
        refused = c.get("/tasks", headers=servers.bearer("wrong-again"))
        assert refused.status_code == 429 and refused.json()["error"] == "TooManyWrongTokens"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        _, code, reason = _hello(servers.plain.ws_url, {"token": "wrong-hello"})
        assert code == 1008 and "too many wrong tokens" in reason


def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(servers: Servers) -> None:
    # Given the default settings, 40 wrong tokens each claiming another client address
    with httpx.Client(base_url=servers.plain.url, timeout=30) as c:
        codes = [c.get("/tasks", headers={**servers.bearer(f"guess-{i}"),
                                          "X-Forwarded-For": f"198.51.100.{i}"}).status_code
                 for i in range(40)]
        forwarded = c.get("/tasks", headers={**servers.bearer("guess-f"),
                                             "Forwarded": "for=198.51.100.250"}).status_code
    # Then every one counts against the peer address: past the limit, they are 429s
    assert set(codes) <= {401, 429} and codes.count(401) <= MAX_WRONG, codes
    assert codes[MAX_WRONG:] == [429] * (40 - MAX_WRONG) and forwarded == 429

    # Given a server whose operator trusts its proxy (here the loopback address)
    with httpx.Client(base_url=servers.proxied.url, timeout=30) as c:
        def guess(i: int, **headers: str) -> int:
            return c.get("/tasks", headers={**servers.bearer(f"g-{i}"), **headers}).status_code

        # When one client behind it guesses, forging a new leftmost hop every time
        codes = [guess(i, **{"X-Forwarded-For": f"10.66.{i}.1, 203.0.113.7"})
                 for i in range(MAX_WRONG + 5)]
        # Then the hop the trusted proxy added is the key: it is slowed all the same
        assert codes == [401] * MAX_WRONG + [429] * 5
        # and the standard Forwarded header names the same client
        assert guess(99, Forwarded='for="203.0.113.7:4711";proto=https') == 429
        # And another client behind the same proxy is not touched, nor its right token
        assert guess(100, **{"X-Forwarded-For": "203.0.113.8"}) == 401
        assert guess(101, Forwarded='for="[2001:db8::8]"') == 401
        assert c.get("/tasks", headers={**servers.bearer("alice"),
                                        "X-Forwarded-For": "203.0.113.7"}).status_code == 200


def test_a_revoked_tokens_dashboard_session_ends_with_it(servers: Servers) -> None:
    settings = servers.service.settings
    grace, _ = tokens.create(settings, "grace")
    with httpx.Client(base_url=servers.plain.url, timeout=30) as c:
        # Given grace signed in to the dashboard
        cookie, csrf = _sign_in(c, grace)
        assert c.get("/tasks", headers=_with(cookie)).status_code == 200
        # When her token is revoked
        tokens.revoke(settings, owner="grace")
        # Then her bearer is refused, and so is her session: reads, and changes with the
        # CSRF token
        assert httpx.get(servers.proxied.url + "/tasks", headers={
            "Authorization": f"Bearer {grace}", "X-Forwarded-For": "192.0.2.9"}
        ).status_code == 401
        assert c.get("/tasks", headers=_with(cookie)).status_code == 401
        assert c.post("/tasks", json=PREDICTION, headers={
            **_with(cookie), "X-CSRF-Token": csrf}).status_code == 401


def test_a_revoked_tokens_session_ends_on_every_server_within_a_second(
        servers: Servers) -> None:
    settings = servers.service.settings
    carol, _ = tokens.create(settings, "carol")
    a = httpx.Client(base_url=servers.plain.url, timeout=30)
    b = httpx.Client(base_url=servers.proxied.url, timeout=30)
    with a, b:
        # Given carol signed in on one server
        cookie, csrf = _sign_in(a, carol)
        # Then her session works on both, requests alternating between them
        for i in range(6):
            c = (a, b)[i % 2]
            assert c.get("/tasks", headers=_with(cookie)).status_code == 200, i
        made = b.post("/tasks", json=PREDICTION, headers={**_with(cookie), "X-CSRF-Token": csrf})
        assert made.status_code == 201 and made.json()["owner"] == "carol"
        assert a.get("/session", headers=_with(cookie)).json()["owner"] == "carol"

        def refused_everywhere() -> float:
            """When her session was first refused by both servers (then more of hers)."""
            assert [c.get("/tasks", headers=_with(cookie)).status_code for c in (a, b)] == \
                [401, 401]
            both = time.monotonic()
            assert b.get("/tasks", headers={"Authorization": f"Bearer {carol}"}
                         ).status_code == 401
            for c in (a, b):
                assert c.get("/session", headers=_with(cookie)).status_code == 401
                assert c.post("/tasks", json=PREDICTION, headers={
                    **_with(cookie), "X-CSRF-Token": csrf}).status_code == 401
            return both

        async def revoked_while_watching() -> tuple[float, int | None, float]:
            # a socket the dashboard opened with the session, before the revocation
            headers = {**_with(cookie), "Origin": servers.proxied.url}
            async with websockets.connect(servers.proxied.ws_url,
                                          additional_headers=headers) as ws:
                await ws.send(json.dumps({}))
                assert json.loads(await ws.recv())["subscribed"] is True
                # When her token is revoked
                tokens.revoke(settings, owner="carol")
                revoked = time.monotonic()
                # Then her bearer is refused, and her session on both servers, at once
                refused_at = await asyncio.to_thread(refused_everywhere)
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), timeout=10)
                except websockets.ConnectionClosed as closed:
                    return (refused_at - revoked, closed.rcvd.code if closed.rcvd else None,
                            time.monotonic() - revoked)

        refused_by, code, closed_after = asyncio.run(revoked_while_watching())
        assert refused_by < 1.0
        # And the socket her session opened is closed too, within about a second
        assert code == 1008 and closed_after < 3.0


def test_signing_out_everywhere_ends_the_owners_sessions_on_every_server(
        servers: Servers) -> None:
    a = httpx.Client(base_url=servers.plain.url, timeout=30)
    b = httpx.Client(base_url=servers.proxied.url, timeout=30)
    with a, b:
        # Given dave signed in on both servers, and alice on one
        dave_a, csrf_a = _sign_in(a, servers.token["dave"])
        dave_b, _ = _sign_in(b, servers.token["dave"])
        alice, _ = _sign_in(b, servers.token["alice"])
        # When dave signs out everywhere from one of them
        out = b.delete("/sessions", headers={**_with(dave_a), "X-CSRF-Token": csrf_a})
        assert out.status_code == 200 and out.json() == {"ended": 2}
        # Then neither of his sessions works on either server; alice's does
        for c in (a, b):
            assert c.get("/tasks", headers=_with(dave_a)).status_code == 401
            assert c.get("/tasks", headers=_with(dave_b)).status_code == 401
            assert c.get("/tasks", headers=_with(alice)).status_code == 200
        # And a user naming another owner ends only its own sessions
        bob_cookie, bob_csrf = _sign_in(a, servers.token["bob"])
        out = a.delete("/sessions", params={"owner": "alice"},
                       headers={**_with(bob_cookie), "X-CSRF-Token": bob_csrf})
        assert out.status_code == 200
        assert a.get("/tasks", headers=_with(alice)).status_code == 200
        assert a.get("/tasks", headers=_with(bob_cookie)).status_code == 401
        # And without the CSRF token, a cookie cannot sign anyone out
        alice_cookie, _ = _sign_in(a, servers.token["alice"])
        assert a.delete("/sessions", headers=_with(alice_cookie)).status_code == 403
        assert a.get("/tasks", headers=_with(alice_cookie)).status_code == 200


def test_one_owners_sign_ins_evict_only_that_owners_oldest_session(
        servers: Servers) -> None:
    a = httpx.Client(base_url=servers.plain.url, timeout=30)
    b = httpx.Client(base_url=servers.proxied.url, timeout=30)
    with a, b:
        # Given the admin signed in
        admin, _ = _sign_in(a, servers.token["root"])
        # When erin signs in with her own token 10,001 times (she stops once the server
        # has refused her 50 times in a row)
        accepted: list[str] = []
        refused_in_a_row = 0
        for _ in range(10_001):
            r = a.post("/session", json={"token": servers.token["erin"]})
            if r.status_code == 200:
                accepted.append(r.cookies[COOKIE])
                refused_in_a_row = 0
                continue
            assert r.status_code == 429 and r.json()["error"] == "TooManySignIns", r.text
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            refused_in_a_row += 1
            if refused_in_a_row == 50:
                break
        # Then the admin's session still works, on both servers
        assert a.get("/tasks", headers=_with(admin)).status_code == 200
        assert b.get("/tasks", headers=_with(admin)).status_code == 200
        # And erin was held to her sign-ins per minute, and keeps only her newest sessions
        assert len(accepted) == MAX_SIGN_INS
        alive = [b.get("/tasks", headers=_with(cookie)).status_code for cookie in accepted]
        assert alive == [401] * (MAX_SIGN_INS - CAP) + [200] * CAP


HOSTILE_COOKIES = ["x" * 4000, "<script>alert(1)</script>", "../../etc/passwd", "\u00e9t\u00e9",
                   "' OR 1=1 --", ""]


def test_hostile_session_input_is_a_4xx(servers: Servers) -> None:
    with httpx.Client(base_url=servers.proxied.url, timeout=30) as c:
        for cookie in HOSTILE_COOKIES:
            for method, path in (("GET", "/tasks"), ("GET", "/session"),
                                 ("DELETE", "/session"), ("DELETE", "/sessions")):
                r = c.request(method, path, headers={
                    "Cookie": f"{COOKIE}={cookie}".encode(), "X-Forwarded-For": "192.0.2.50"})
                assert r.status_code == 401, (cookie[:20], method, path, r.text)
        for body in ({"token": "t" * 5000}, {"token": ""}, {"token": ["a"]}, {}):
            r = c.post("/session", json=body, headers={"X-Forwarded-For": "192.0.2.51"})
            assert r.status_code == 422, (body, r.text)
        alice, csrf = _sign_in(c, servers.token["alice"], **{"X-Forwarded-For": "192.0.2.52"})
        r = c.delete("/sessions", params={"owner": "x" * 500},
                     headers={**_with(alice), "X-CSRF-Token": csrf})
        assert r.status_code == 422, r.text
        # an admin naming markup, a path or control characters ends nobody's sessions
        admin = {**servers.bearer("root"), "X-Forwarded-For": "192.0.2.53"}
        for owner in ("<script>alert(1)</script>", "../../etc/passwd", "%00"):
            r = c.delete("/sessions", params={"owner": owner}, headers=admin)
            assert r.status_code == 200 and r.json() == {"ended": 0}, (owner, r.text)
        for owner in ("a\x00b", "line\nbreak", ""):
            r = c.delete("/sessions", params={"owner": owner}, headers=admin)
            assert r.status_code == 422, (owner, r.text)
        assert c.get("/tasks", headers=_with(alice)).status_code == 200
        # what a trusted proxy forwards is checked too: no address, markup, a huge list
        for forwarded in ("<script>", "unknown", "for=", ", , ,", ", ".join(["1.2.3.4"] * 1000),
                          "for=\"[::1\"", "999.999.999.999"):
            for name in ("X-Forwarded-For", "Forwarded"):
                r = c.get("/tasks", headers={**servers.bearer("alice"), name: forwarded})
                assert r.status_code == 200, (name, forwarded[:40], r.text)
