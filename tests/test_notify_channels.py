"""Channel rules, webhook target checks and delivery, addresses and email delivery, against
real peers (real HTTP(S) receivers, a real SMTP server, a real SQLite store), without Ray."""

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
from pydantic import SecretStr, ValidationError

from raytasks.errors import NotificationError
from raytasks.inputs import normalise_address, rate_key
from raytasks.models import TaskCreateRequest, TaskUpdateRequest
from raytasks.notify import check_target, sign, verify
from raytasks.notify.email import DIGEST, EmailChannel, allowed
from raytasks.notify.rules import ChannelDown, RuleFilter, Undeliverable
from raytasks.notify.webhooks import SIGNATURE_HEADER, WebhookChannel
from raytasks.settings import ChannelRule, EmailSettings, NotifySettings, WebhookTarget
from raytasks.store import open_store
from tests.conftest import wait_for
from tests.receivers import SmtpSink, WebhookReceiver, self_signed


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


def test_rules_filter_events_priorities_and_throttle_progress() -> None:
    rule = RuleFilter(ChannelRule(events=["FAILED", "progress"], priorities=[1],
                                  min_interval_s=1.0))
    assert rule.wants({"kind": "status", "status": "FAILED", "priority": 1}, now=0)
    assert not rule.wants({"kind": "status", "status": "FAILED", "priority": 3}, now=0)
    assert not rule.wants({"kind": "status", "status": "COMPLETED", "priority": 1}, now=0)
    progress = {"kind": "progress", "task_id": "t"}
    assert [rule.wants(progress, now=t) for t in (0, 0.5, 1.0, 1.2)] == [True, False, True,
                                                                          False]


def test_the_progress_throttle_forgets_finished_and_stale_tasks() -> None:
    rule = RuleFilter(ChannelRule(events=["COMPLETED", "progress"], min_interval_s=1.0),
                      max_tracked=100)
    # Given progress from 100 tasks, then the first one finishes
    for i in range(100):
        assert rule.wants({"kind": "progress", "task_id": f"t{i}"}, now=0.0)
    rule.wants({"kind": "status", "status": "COMPLETED", "task_id": "t0", "priority": 2},
               now=0.1)
    # Then its entry is gone, and the others still hold their throttle
    assert "t0" not in rule._last_progress and len(rule._last_progress) == 99
    assert not rule.wants({"kind": "progress", "task_id": "t1"}, now=0.5)
    # When a thousand more tasks report over the next seconds
    for i in range(1000):
        rule.wants({"kind": "progress", "task_id": f"u{i}"}, now=2.0 + i * 0.01)
    # Then the map never holds more than its bound, and throttling still works
    assert len(rule._last_progress) <= 100
    assert rule.wants({"kind": "progress", "task_id": "v"}, now=20.0)
    assert not rule.wants({"kind": "progress", "task_id": "v"}, now=20.5)


def test_the_email_rate_windows_forget_quiet_recipients(tmp_path: Path) -> None:
    smtp = SmtpSink()
    try:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        channel = EmailChannel(EmailSettings(host="127.0.0.1", port=smtp.port,
                                             rate_limit_count=5, rate_limit_window_s=60),
                               store)
        # Given forty recipients mailed once each within one window
        for i in range(40):
            assert channel.send(_event(i), f"r{i}@example.com", now=float(i)) == "delivered"
        assert len(channel._sent) == 40
        # When one more is mailed two windows later
        channel.send(_event(99), "late@example.com", now=200.0)
        # Then only the recipients of the current window are remembered
        assert list(channel._sent) == [rate_key("late@example.com")]
        # And a recipient of the current window still counts towards its limit
        for i in range(4):
            channel.send(_event(100 + i), "late@example.com", now=201.0 + i)
        assert channel.send(_event(200), "late@example.com", now=210.0) == DIGEST
    finally:
        smtp.close()


def test_addresses_are_normalised_to_one_canonical_form() -> None:
    assert normalise_address(" mailto:Quant@Example.COM ") == "Quant@example.com"
    assert normalise_address("MAILTO:a.b+tag@sub.example.cn") == "a.b+tag@sub.example.cn"
    assert rate_key("Victim@Example.com") == rate_key("victim@example.COM")


@pytest.mark.parametrize("entry", [
    "a@b.c\r\nBcc: evil@x.y", "victim@example.com\u2028Bcc: x@y.z", "v@x.com\u2029",
    "<victim@example.com>", "Victim <victim@example.com>", "a@b.com, c@d.com",
    "a@b.com;c@d.com", '"quoted"@example.com', "no-at-sign", "@example.com", "a@localhost",
    "a@-bad-.com", "a..b@example.com", "a@b.com\x00", "a@exa\ud800mple.com",
    "x" * 65 + "@example.com",
])
def test_addresses_that_could_poison_a_message_are_refused(entry: str) -> None:
    with pytest.raises(ValidationError, match="notify"):
        TaskCreateRequest(name="x", task_type="data", notify=[entry])
    with pytest.raises(ValidationError, match="notify"):
        TaskUpdateRequest(notify=[entry])  # a PATCH is checked like a create


def test_notify_entries_are_capped_and_deduplicated() -> None:
    req = TaskCreateRequest(name="x", task_type="data",
                            notify=["Q@example.com", "mailto:q@EXAMPLE.com", "r@example.com"])
    assert req.notify == ["Q@example.com", "r@example.com"]
    with pytest.raises(ValidationError, match="at most 5 notify addresses"):
        TaskCreateRequest(name="x", task_type="data",
                          notify=[f"u{i}@example.com" for i in range(47)])


def test_the_allow_list_admits_domains_and_single_addresses() -> None:
    settings = EmailSettings(allow_domains=["example.com"], allow_addresses=["Boss@corp.cn"])
    assert allowed(settings, "anyone@EXAMPLE.com") and allowed(settings, "boss@corp.cn")
    assert not allowed(settings, "other@corp.cn") and not allowed(settings, "x@example.co")
    assert not allowed(settings, "x@evil.example.com.attacker.net")
    assert not allowed(EmailSettings(), "anyone@example.com")  # empty: tasks add nobody
    assert not allowed(None, "anyone@example.com")  # no email channel at all


def _event(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": i, "task_id": f"task{i}", "kind": "status", "status": "COMPLETED",
            "at": 0, **extra}


def test_rate_limit_counts_the_normalised_address_and_sends_one_digest(tmp_path: Path) -> None:
    smtp = SmtpSink()
    try:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        channel = EmailChannel(EmailSettings(host="127.0.0.1", port=smtp.port,
                                             rate_limit_count=2, rate_limit_window_s=60),
                               store)
        # Given one recipient spelt seven ways
        spellings = ["Desk@Example.com", "desk@example.COM", "desk@example.com"]
        outcomes = []
        for i in range(1, 8):
            event = _event(i)
            outcome = channel.send(event, spellings[i % 3], now=float(i))
            outcomes.append(outcome)
            store.log_delivery([{"channel": "email", "target": spellings[i % 3],
                                 "event_id": i, "attempt": 1, "outcome": outcome,
                                 "detail": channel.detail(event, outcome), "at": float(i)}])
        # Then two are mailed and five held: the spellings share one limit
        assert outcomes == ["delivered"] * 2 + [DIGEST] * 5
        assert len(smtp.messages) == 2
        assert channel.flush(now=30.0) == []  # window still full
        # a restarted channel still holds them (they are in the delivery log)
        channel = EmailChannel(channel.settings, store)
        channel.flush(now=61.0)
        wait_for(lambda: len(smtp.messages) >= 3, what="the digest")
        digests = [m for m in smtp.messages if "digest" in m["Subject"]]
        held = sorted(i for m in digests for i in json.loads("[" + m["X-Raytasks-Event-Ids"]
                                                             + "]"))
        assert held == [3, 4, 5, 6, 7]
    finally:
        smtp.close()


def test_starttls_and_login(tmp_path: Path) -> None:
    tls, ca = self_signed(tmp_path)
    smtp = SmtpSink(tls=tls, login=("raytasks", "pa55"))
    try:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        event = {"event_id": 1, "task_id": "t1", "kind": "status", "status": "FAILED", "at": 0}
        good = EmailSettings(host="127.0.0.1", port=smtp.port, starttls=True, ca_file=ca,
                             username="raytasks", password="pa55", recipients=["d@x.cn"])
        assert EmailChannel(good, store).send(event, "d@x.cn", now=0.0) == "delivered"
        assert len(smtp.messages) == 1
        # a wrong password takes the channel down (retried later), never a silent drop
        bad = good.model_copy(update={"password": SecretStr("nope")})
        with pytest.raises(ChannelDown) as down:
            EmailChannel(bad, store).send(event, "d@x.cn", now=0.0)
        assert "nope" not in str(down.value)  # secrets are never logged
        # without STARTTLS the server refuses to take the mail
        plain = good.model_copy(update={"starttls": False})
        with pytest.raises(Exception):  # noqa: B017 - refused, whichever way smtplib says it
            EmailChannel(plain, store).send(event, "d@x.cn", now=0.0)
        assert len(smtp.messages) == 1
    finally:
        smtp.close()


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
    """The attacker's DNS server, in place of ``socket.getaddrinfo``: its n-th answer for
    ``name`` is ``answers[n]`` (the last one from then on, as with a TTL of 0). Numeric
    hosts and other names go to the real resolver."""

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


def _webhook(url: str, settings: NotifySettings | None = None) -> WebhookChannel:
    return WebhookChannel(WebhookTarget(url=url, secret="s3cret"), settings or NotifySettings())


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
