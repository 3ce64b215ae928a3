"""Webhooks: target checks, signing, and delivery pinned to the checked addresses, against
real HTTP(S) receivers, without Ray. The DNS rebinding attack is played by a hostile
resolver that answers a vetted address first and a denied one afterwards."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from raytasks.errors import NotificationError
from raytasks.notify import check_target, sign, verify
from raytasks.notify.rules import ChannelDown, Undeliverable
from raytasks.notify.webhooks import SIGNATURE_HEADER, WebhookChannel
from raytasks.settings import NotifySettings, WebhookTarget
from tests.receivers import WebhookReceiver, self_signed


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": i, "task_id": f"task{i}", "kind": "status", "status": "COMPLETED",
            "at": 0, **extra}


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[fd00:ec2::254]/latest/",
    "file:///etc/passwd",
    # the same metadata addresses inside IPv6: mapped, compatible, NAT64, 6to4, Teredo
    "http://[::ffff:169.254.169.254]/latest/",
    "http://[::ffff:6464:64c8]/latest/",
    "http://[::169.254.169.254]/latest/",
    "http://[64:ff9b::a9fe:a9fe]/latest/",
    "http://[2002:a9fe:a9fe::1]/latest/",
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/latest/",
])
def test_cloud_metadata_targets_are_denied_by_default(url: str) -> None:
    with pytest.raises(NotificationError):
        check_target(url, NotifySettings())


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                                  "[64:ff9b::7f00:1]", "[2002:7f00:1::]"])
def test_a_denied_ipv4_network_also_denies_its_ipv6_forms(host: str) -> None:
    settings = NotifySettings(deny_networks=["127.0.0.1/32"])
    with pytest.raises(NotificationError, match=r"denied network 127\.0\.0\.1/32"):
        check_target(f"http://{host}:9/hook", settings)
    check_target("http://[::1]:9/hook", settings)  # IPv6's own loopback is not 127.0.0.1


def test_allow_list_limits_targets() -> None:
    check_target("http://127.0.0.1:9/hook", NotifySettings())
    with pytest.raises(NotificationError, match=r"not in notify\.allow_hosts"):
        check_target("http://127.0.0.1:9/hook", NotifySettings(allow_hosts=["hooks.example"]))


def test_signature_round_trip_and_tamper_detection() -> None:
    body = b'{"event_id":1}'
    sig = sign("k", "1700000000", body)
    assert verify("k", "1700000000", body, sig)
    assert not verify("k", "1700000000", body + b" ", sig)
    assert not verify("other", "1700000000", body, sig)


class _Recorder:
    """A real HTTP(S) server on ``host`` that records each POST and answers ``status``.

    With ``tls`` (a server ``ssl.SSLContext``) it speaks HTTPS and records the name each
    client asked for in its handshake (SNI) in ``server_names``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 204,
                 headers: dict[str, str] | None = None, tls: Any = None) -> None:
        self.requests: list[tuple[str, Message, bytes]] = []  # (path, headers, body)
        self.server_names: list[str | None] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests.append((self.path, self.headers, body))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.server = Server((host, port), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Callable[..., _Recorder]]:
    started: list[_Recorder] = []

    def start(**kwargs: Any) -> _Recorder:
        started.append(_Recorder(**kwargs))
        return started[-1]

    yield start
    for each in started:
        each.close()


class _Resolver:
    """The attacker's DNS server: its n-th answer for ``name`` is ``answers[n]`` (the last one
    from then on, as with a TTL of 0), whoever asks. Called as ``socket.getaddrinfo`` (to
    stand in for the system resolver), or through :meth:`resolve` (the resolver a channel
    is given). Numeric hosts and other names go to the real resolver."""

    def __init__(self, name: str, answers: list[list[str]]) -> None:
        self.name, self.answers, self.lookups = name, answers, 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                 flags: int = 0) -> list[Any]:
        if host != self.name:
            return self.real(host, port, family, type, proto, flags)
        self.lookups += 1
        ips = self.answers[min(self.lookups, len(self.answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))
                for ip in ips]

    def resolve(self, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        return [(info[0], info[4]) for info in self(host, port, proto=socket.IPPROTO_TCP)]


def _webhook(url: str, settings: NotifySettings | None = None, **kwargs: Any) -> WebhookChannel:
    return WebhookChannel(WebhookTarget(url=url, secret="s3cret"), settings or NotifySettings(),
                          **kwargs)


def test_a_rebinding_dns_answer_cannot_move_the_post_past_the_target_check(
        monkeypatch: pytest.MonkeyPatch, recorder: Callable[..., _Recorder]) -> None:
    # Given a real receiver on 127.0.0.1, and a "metadata service" on 127.0.0.2 that the
    # operator denies
    receiver = WebhookReceiver("s3cret")
    port = receiver.server.server_port
    metadata = recorder(host="127.0.0.2", port=port, status=200)
    settings = NotifySettings(deny_networks=[*NotifySettings().deny_networks, "127.0.0.2/32"])
    url = f"http://hooks.example:{port}/hook"
    channel = _webhook(url, settings)
    # And a hostile DNS server that answers the first lookup with the receiver, and every
    # later one with the metadata service
    dns = _Resolver("hooks.example", [["127.0.0.1"], ["127.0.0.2"]])
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    try:
        # When an event is posted
        assert channel.send(_event(1), url, now=0.0) == "delivered"
        # Then it went to the address the check vetted, and the host was looked up once
        assert [p["event_id"] for p in receiver.accepted] == [1]
        assert receiver.bad_signatures == 0
        assert metadata.requests == [] and dns.lookups == 1
        # When the next event is posted, Then the check sees the rebound answer and refuses
        with pytest.raises(Undeliverable, match=r"127\.0\.0\.2, inside denied network"):
            channel.send(_event(2), url, now=1.0)
        assert metadata.requests == [] and dns.lookups == 2
        assert [p["event_id"] for p in receiver.accepted] == [1]
    finally:
        receiver.close()


def test_a_post_tries_the_vetted_addresses_in_resolution_order(
        monkeypatch: pytest.MonkeyPatch, recorder: Callable[..., _Recorder]) -> None:
    # Given a host that resolves to a dead address first, then to a live receiver
    hook = recorder()
    url = f"http://hooks.example:{hook.port}/hook"
    dns = _Resolver("hooks.example", [["127.0.0.3", "127.0.0.1"]])
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    assert check_target(url, NotifySettings()).addresses == [("127.0.0.3", hook.port),
                                                              ("127.0.0.1", hook.port)]
    # When an event is posted, Then it reaches the second address on one lookup
    assert _webhook(url).send(_event(1), url, now=0.0) == "delivered"
    assert len(hook.requests) == 1 and dns.lookups == 2  # one for the check above


def test_a_webhook_reaches_a_real_receiver_signed_and_named_by_its_host(
        recorder: Callable[..., _Recorder]) -> None:
    # Given a receiver, named by host name, with a query and a fragment in the URL
    hook = recorder()
    url = f"http://localhost:{hook.port}/hook?team=quant#ignored"
    # When an event is posted
    assert _webhook(url).send(_event(7), url, now=0.0) == "delivered"
    # Then it asked for the path and query, named the URL's host, and the signature verifies
    [(path, headers, body)] = hook.requests
    assert path == "/hook?team=quant"
    assert headers["Host"] == f"localhost:{hook.port}"
    assert verify("s3cret", headers["X-Raytasks-Timestamp"], body, headers[SIGNATURE_HEADER])
    assert json.loads(body)["event_id"] == 7 and headers["X-Raytasks-Event-Id"] == "7"
    assert headers["Content-Type"] == "application/json"


def test_an_ipv6_literal_target_is_posted_to_with_a_bracketed_host(
        recorder: Callable[..., _Recorder]) -> None:
    hook = recorder(host="::1")
    url = f"http://[::1]:{hook.port}/hook"
    assert check_target(url, NotifySettings()).addresses == [("::1", hook.port)]
    assert _webhook(url).send(_event(1), url, now=0.0) == "delivered"
    assert hook.requests[0][1]["Host"] == f"[::1]:{hook.port}"


@pytest.mark.parametrize("status", [500, 302, 307])
def test_an_error_status_is_the_events_failure_and_redirects_are_not_followed(
        status: int, recorder: Callable[..., _Recorder]) -> None:
    # Given a receiver that answers an error, or redirects to another (allowed) receiver
    elsewhere = recorder()
    hook = recorder(status=status,
                    headers={"Location": f"http://127.0.0.1:{elsewhere.port}/hook"})
    url = f"http://127.0.0.1:{hook.port}/hook"
    # When an event is posted, Then the status is the failure, and nothing follows it
    with pytest.raises(RuntimeError, match=f"^HTTP {status}$"):
        _webhook(url).send(_event(1), url, now=0.0)
    assert len(hook.requests) == 1 and elsewhere.requests == []


def test_an_unreachable_receiver_takes_the_channel_down_and_a_denied_one_dead_letters() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed}/hook"
    with pytest.raises(ChannelDown, match="refused"):
        _webhook(url).send(_event(1), url, now=0.0)
    metadata = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(Undeliverable, match=r"169\.254\.0\.0/16"):
        _webhook(metadata).send(_event(1), metadata, now=0.0)


def test_a_webhook_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(NotificationError, match="user name or password") as refused:
        check_target("http://hooks:pa55@127.0.0.1:9/hook", NotifySettings())
    assert "pa55" not in str(refused.value)


def test_https_verifies_the_urls_host_while_connecting_to_the_vetted_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        recorder: Callable[..., _Recorder]) -> None:
    # Given an HTTPS receiver on 127.0.0.1 whose certificate names only "localhost"
    tls, cert_path = self_signed(tmp_path, "localhost")
    hook = recorder(tls=tls)
    url = f"https://localhost:{hook.port}/hook"
    # When the certificate is not trusted, Then the channel is down and nothing is posted
    with pytest.raises(ChannelDown, match="CERTIFICATE_VERIFY_FAILED"):
        _webhook(url).send(_event(1), url, now=0.0)
    assert hook.requests == []
    # When the client trusts it (OpenSSL reads SSL_CERT_FILE into the default context)
    monkeypatch.setenv("SSL_CERT_FILE", cert_path)
    assert _webhook(url).send(_event(2), url, now=1.0) == "delivered"
    # Then the handshake asked for "localhost" though TCP went to 127.0.0.1, and so did Host
    assert hook.server_names == ["localhost", "localhost"]
    [(_, headers, _)] = hook.requests
    assert headers["Host"] == f"localhost:{hook.port}"
    # And the same receiver named by its address is refused: the certificate is checked
    # against the URL's host, and it does not name 127.0.0.1
    by_address = f"https://127.0.0.1:{hook.port}/hook"
    with pytest.raises(ChannelDown, match="IP address mismatch"):
        _webhook(by_address).send(_event(3), by_address, now=2.0)
    assert len(hook.requests) == 1


_METADATA = "127.0.0.2"  # stands in for 169.254.169.254: denied below, and listening


def _denying_metadata() -> NotifySettings:
    return NotifySettings(deny_networks=[*NotifySettings().deny_networks, f"{_METADATA}/32"])


def test_a_given_resolver_is_asked_once_and_the_post_goes_to_its_vetted_answer(
        monkeypatch: pytest.MonkeyPatch, recorder: Callable[..., _Recorder]) -> None:
    # Given a receiver on 127.0.0.1, a denied "metadata service" on the same port of
    # 127.0.0.2, and a channel given a hostile resolver (receiver first, metadata after)
    receiver = WebhookReceiver("s3cret")
    port = receiver.server.server_port
    metadata = recorder(host=_METADATA, port=port, status=200)
    dns = _Resolver("hooks.example", [["127.0.0.1"], [_METADATA]])
    url = f"http://hooks.example:{port}/hook"
    channel = _webhook(url, _denying_metadata(), resolve=dns.resolve)
    # And the same attacker answering the system resolver, so a second lookup by any path
    # (http.client, socket.create_connection) would be seen and would go to the metadata
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    try:
        # When an event is posted
        assert channel.send(_event(1), url, now=0.0) == "delivered"
        # Then it reached the vetted receiver, signed, on one lookup, and the metadata
        # service saw nothing
        assert [p["event_id"] for p in receiver.accepted] == [1]
        assert receiver.bad_signatures == 0
        assert dns.lookups == 1 and metadata.requests == []
        # When the next event is posted, the check sees the rebound answer and refuses it
        with pytest.raises(Undeliverable, match=r"127\.0\.0\.2, inside denied network"):
            channel.send(_event(2), url, now=1.0)
        assert dns.lookups == 2 and metadata.requests == []
    finally:
        receiver.close()


def test_one_denied_address_among_the_answers_refuses_the_target(
        recorder: Callable[..., _Recorder]) -> None:
    # Given a host that resolves to an allowed receiver and to the denied metadata address
    hook = recorder()
    metadata = recorder(host=_METADATA, port=hook.port, status=200)
    dns = _Resolver("hooks.example", [["127.0.0.1", _METADATA]])
    url = f"http://hooks.example:{hook.port}/hook"
    # When an event is posted, Then the target is refused and neither address is posted to
    with pytest.raises(Undeliverable, match=r"127\.0\.0\.2, inside denied network"):
        _webhook(url, _denying_metadata(), resolve=dns.resolve).send(_event(1), url, now=0.0)
    assert hook.requests == [] and metadata.requests == []


def test_https_to_a_rebound_host_names_the_host_in_sni_host_and_certificate_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        recorder: Callable[..., _Recorder]) -> None:
    # Given an HTTPS receiver on 127.0.0.1 whose certificate names "hooks.example" (a name
    # only the hostile resolver knows), and a denied metadata service on 127.0.0.2
    tls, cert_path = self_signed(tmp_path, "hooks.example")
    hook = recorder(tls=tls)
    metadata = recorder(host=_METADATA, port=hook.port, status=200)
    monkeypatch.setenv("SSL_CERT_FILE", cert_path)  # OpenSSL's default context trusts it
    dns = _Resolver("hooks.example", [["127.0.0.1"], [_METADATA]])
    url = f"https://hooks.example:{hook.port}/hook"
    # When an event is posted
    channel = _webhook(url, _denying_metadata(), resolve=dns.resolve)
    assert channel.send(_event(1), url, now=0.0) == "delivered"
    # Then TCP went to the vetted address while the handshake (SNI, certificate) and the
    # Host header named the URL's host
    assert hook.server_names == ["hooks.example"] and dns.lookups == 1
    [(_, headers, _)] = hook.requests
    assert headers["Host"] == f"hooks.example:{hook.port}"
    assert metadata.requests == []
    # And a certificate for another name at the vetted address is refused
    other_tls, other_path = self_signed(tmp_path, "other.example")
    other = recorder(tls=other_tls)
    monkeypatch.setenv("SSL_CERT_FILE", other_path)
    elsewhere = f"https://hooks.example:{other.port}/hook"
    dns = _Resolver("hooks.example", [["127.0.0.1"]])
    with pytest.raises(ChannelDown, match="Hostname mismatch"):
        _webhook(elsewhere, resolve=dns.resolve).send(_event(2), elsewhere, now=1.0)
    assert other.requests == []
