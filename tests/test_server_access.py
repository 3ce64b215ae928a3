"""Who is calling, without Ray: the client address behind trusted proxies, token scopes,
store-kept sessions with their lifetimes and their token, the sign-in counts, and scoped
tokens in the token file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from raytasks import Settings, tokens
from raytasks.errors import SettingsError
from raytasks.server.app import prune_access
from raytasks.server.auth import Principal, csrf_ok, hash_token, principal_for
from raytasks.server.peers import MAX_HOPS, TrustedProxies, source_key, uvicorn_options
from raytasks.server.sessions import Sessions
from raytasks.server.throttle import SignIns
from raytasks.settings import ApiSettings, ApiToken
from raytasks.store.access import AccessStore


def _xff(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", value.encode())]


def _fwd(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"forwarded", value.encode())]


PROXIES = TrustedProxies(["10.0.0.0/8", "2001:db8:ff::/48"])
CLIENTS = [  # (peer, headers, the client they name)
    ("203.0.113.9", _xff("198.51.100.1"), "203.0.113.9"),  # no proxy: the header is a lie
    ("10.0.0.5", [], "10.0.0.5"),  # a proxy's own request
    ("10.0.0.5", _xff("198.51.100.1"), "198.51.100.1"),
    ("10.0.0.5", _xff("6.6.6.6, 198.51.100.1"), "198.51.100.1"),  # forged leftmost hop
    ("10.0.0.5", _xff("198.51.100.1, 10.1.1.1"), "198.51.100.1"),  # two proxies
    ("10.0.0.5", _xff("10.2.2.2, 10.1.1.1"), "10.2.2.2"),  # proxies all the way
    ("10.0.0.5", _xff("198.51.100.1:5555"), "198.51.100.1"),
    ("10.0.0.5", _xff("unknown"), "10.0.0.5"),  # the proxy did not know: the proxy's
    ("10.0.0.5", _xff("198.51.100.1, <script>"), "10.0.0.5"),
    ("10.0.0.5", _xff(""), "10.0.0.5"),
    ("10.0.0.5", [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"198.51.100.2")],
     "198.51.100.2"),
    ("10.0.0.5", _fwd('for=198.51.100.3;proto=https'), "198.51.100.3"),
    ("10.0.0.5", _fwd('for="[2001:db8::1]:4711", for=10.1.1.1'), "2001:db8::1"),
    ("10.0.0.5", _fwd('For="_hidden"'), "10.0.0.5"),
    ("10.0.0.5", _xff("::ffff:198.51.100.4"), "198.51.100.4"),  # IPv4-mapped
    ("2001:db8:ff::1", _xff("2001:db8:1::7"), "2001:db8:1::7"),
    ("10.0.0.5", _xff(", ".join(["10.3.3.3"] * (MAX_HOPS + 5) + ["198.51.100.5"])),
     "198.51.100.5"),
    ("not-an-address", _xff("198.51.100.1"), "unknown"),
]


@pytest.mark.parametrize(("peer", "headers", "client"), CLIENTS)
def test_the_client_is_named_only_by_a_trusted_proxy(peer: str, headers: list[tuple[bytes,
                                                     bytes]], client: str) -> None:
    assert PROXIES.client(peer, headers)[0] == client


def test_no_proxy_is_trusted_by_default() -> None:
    default = TrustedProxies(ApiSettings().trusted_proxies)
    assert default.client("127.0.0.1", _xff("198.51.100.1")) == ("127.0.0.1", None)
    assert uvicorn_options(ApiSettings()) == {"proxy_headers": False,
                                              "forwarded_allow_ips": []}
    assert uvicorn_options(ApiSettings(trusted_proxies=["10.0.0.0/8"])) == {
        "proxy_headers": True, "forwarded_allow_ips": ["10.0.0.0/8"]}
    with pytest.raises(ValueError, match="trusted_proxies"):
        ApiSettings(trusted_proxies=["the proxy"])


def test_a_trusted_proxy_reports_the_scheme() -> None:
    assert PROXIES.client("10.0.0.5", [*_xff("198.51.100.1"),
                                       (b"x-forwarded-proto", b"https")])[1] == "https"
    assert PROXIES.client("10.0.0.5", _fwd("for=198.51.100.1;proto=https"))[1] == "https"
    assert PROXIES.client("10.0.0.5", _fwd("for=198.51.100.1;proto=gopher"))[1] is None
    assert PROXIES.client("203.0.113.9", [(b"x-forwarded-proto", b"https")])[1] is None


def test_a_source_is_an_ipv4_address_or_an_ipv6_64() -> None:
    assert source_key("198.51.100.1") == "198.51.100.1"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::9") \
        == "2001:db8:1:2::/64"
    assert source_key("unknown") == "unknown"


def test_scopes_come_from_the_role_unless_the_token_names_them() -> None:
    assert Principal("alice").granted == {"read", "submit"}
    assert Principal("root", "admin").granted == {"read", "submit", "admin"}
    assert Principal("ci", "user", frozenset({"admin"})).granted == {"read", "submit", "admin"}
    limited = Principal("erin", "user", frozenset({"submit"}), frozenset({"sleepy"}))
    assert limited.may_submit("sleepy") and not limited.may_submit("prediction")
    assert not Principal("mon", "user", frozenset({"read"})).may_submit("sleepy")
    token = ApiToken(sha256=hash_token("t"), owner="mon", scopes=["read"])
    found = principal_for("t", [token])
    assert found is not None and found.granted == {"read"} and found.token_id == \
        hash_token("t")[:10]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def access(tmp_path: Path) -> Iterator[AccessStore]:
    store = AccessStore(f"sqlite:///{tmp_path / 'store.db'}")
    yield store
    store.close()


def test_a_session_lives_by_its_token_and_its_two_lifetimes(access: AccessStore) -> None:
    clock = Clock()
    api = ApiSettings(session_idle_s=100.0, session_max_s=1000.0)
    # Given two servers on one store, and carol signed in on the first
    one, two = Sessions(access.sessions, api, clock), Sessions(access.sessions, api, clock)
    carol = ApiToken(sha256=hash_token("carol-token"), owner="carol", scopes=["read"])
    who = principal_for("carol-token", [carol])
    assert who is not None
    cookie, session, _ = one.open(who, "10.0.0.1")
    # Then the second finds her session, with her token's scopes and the same CSRF token
    found = two.find(cookie, [carol])
    assert found is not None and found.principal.granted == {"read"}
    assert found.csrf == session.csrf and csrf_ok(cookie, session.csrf)
    assert not csrf_ok(cookie, "0" * 64) and not csrf_ok(cookie, None)
    # And it lives while used, up to its absolute lifetime
    for _ in range(10):
        clock.now += 99.0
        assert two.find(cookie, [carol]) is not None
    clock.now += 20.0  # seen 20 s ago, but 1,010 s after sign-in
    assert one.find(cookie, [carol]) is None
    # A session unused for the idle lifetime ends
    cookie, _, _ = one.open(who, "10.0.0.1")
    clock.now += 100.0
    assert two.find(cookie, [carol]) is None
    # And one whose token is no longer accepted is refused at once, on every server
    cookie, _, _ = one.open(who, "10.0.0.1")
    assert two.find(cookie, []) is None and one.find(cookie, []) is None
    other = ApiToken(sha256=hash_token("another"), owner="carol")
    assert one.find(cookie, [other]) is None  # the owner's other token is not its token
    # Garbage is no session
    for bad in (None, "", "x" * 5000, "<script>"):
        assert one.find(bad, [carol]) is None and not one.close(bad)


def test_sign_ins_are_counted_per_owner_and_per_source() -> None:
    clock = Clock()
    counts = SignIns(per_owner=2, per_source=3, clock=clock)
    for owner in ("bob", "bob"):
        assert counts.wait_s(owner, "10.0.0.1") == (0.0, "")
        counts.add(owner, "10.0.0.1")
    wait, limit = counts.wait_s("bob", "10.0.0.2")
    assert wait == pytest.approx(60.0) and limit == "max_sign_ins_per_owner"
    counts.add("alice", "10.0.0.1")
    assert counts.wait_s("carol", "10.0.0.1")[1] == "max_sign_ins_per_source"
    assert counts.wait_s("carol", "10.0.0.2") == (0.0, "")
    clock.now += 60.0
    assert counts.wait_s("bob", "10.0.0.1") == (0.0, "")


def test_pruning_deletes_ended_sessions_and_audit_entries_past_retention(
        access: AccessStore) -> None:
    clock = Clock()
    api = ApiSettings(session_idle_s=100.0, audit_retention_s=50.0)
    sessions = Sessions(access.sessions, api, clock)
    sessions.open(Principal("bob", token_sha256="b" * 64), "10.0.0.1")
    access.audit.append([{"at": clock.now - 60, "owner": "bob", "action": "task.create"},
                         {"at": clock.now - 10, "owner": "bob", "action": "task.cancel"}])
    svc = SimpleNamespace(sessions=sessions, settings=SimpleNamespace(api=api),
                          audit=SimpleNamespace(clock=clock, table=access.audit))
    clock.now += 100.0
    assert prune_access(svc, now=clock.now - 100.0) == (1, 1)  # type: ignore[arg-type]
    assert [e["action"] for e in access.audit.query()] == ["task.cancel"]
    api.audit_retention_s = None
    assert prune_access(svc) == (0, 0)  # type: ignore[arg-type]


def test_scoped_tokens_in_the_token_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    # Given a file written before tokens had scopes, then a scoped token added
    tokens.token_file(settings).write_text(json.dumps([{
        "id": "0123456789", "sha256": "a" * 64, "owner": "old", "role": "user",
        "created_at": "2025-01-01T00:00:00+00:00"}]))
    secret, record = tokens.create(settings, "ci", "user", ["submit"], ["backtest"])
    # Then both are accepted: the old one with its role's scopes, the new with its own
    old, new = tokens.api_tokens(settings)
    assert (old.scopes, old.task_types) == (None, None)
    assert (new.scopes, new.task_types) == (["submit"], ["backtest"])
    who = principal_for(secret, [old, new])
    assert who is not None and who.granted == {"submit"} and who.may_submit("backtest")
    assert record.scopes == ("submit",)
    # And what cannot be a token's is refused
    with pytest.raises(SettingsError, match="plain name"):
        tokens.create(settings, "ci", task_types=["../x"])
    with pytest.raises(SettingsError, match="submit scope"):
        tokens.create(settings, "ci", scopes=["read"], task_types=["backtest"])
