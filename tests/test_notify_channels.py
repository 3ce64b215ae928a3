"""Channel rules, addresses and email delivery, against a real SMTP server and a real SQLite
store, without Ray (webhooks: ``tests/test_notify_webhooks.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from raytasks.inputs import normalise_address, rate_key
from raytasks.models import TaskCreateRequest, TaskUpdateRequest
from raytasks.notify.email import DIGEST, EmailChannel, allowed
from raytasks.notify.rules import ChannelDown, RuleFilter
from raytasks.settings import ChannelRule, EmailSettings
from raytasks.store import open_store
from tests.conftest import wait_for
from tests.receivers import SmtpSink, self_signed


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
