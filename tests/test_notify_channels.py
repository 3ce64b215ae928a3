"""Channel rules, webhook target checks and email digests, against real peers, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from raytasks.errors import NotificationError
from raytasks.models import TaskCreateRequest
from raytasks.notify import check_target, sign, verify
from raytasks.notify.email import EmailChannel
from raytasks.notify.rules import RuleFilter
from raytasks.settings import ChannelRule, EmailSettings, NotifySettings
from raytasks.store import open_store
from tests.conftest import wait_for
from tests.receivers import SmtpSink


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[fd00:ec2::254]/latest/",
    "file:///etc/passwd",
])
def test_cloud_metadata_targets_are_denied_by_default(url: str) -> None:
    with pytest.raises(NotificationError):
        check_target(url, NotifySettings())


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


def test_notify_entries_cannot_smuggle_headers() -> None:
    with pytest.raises(ValidationError, match="single-line"):
        TaskCreateRequest(name="x", task_type="data", notify=["a@b.c\r\nBcc: evil@x.y"])


def test_rate_limit_turns_a_flood_into_one_digest(tmp_path: Path) -> None:
    smtp = SmtpSink()
    try:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        channel = EmailChannel(EmailSettings(host="127.0.0.1", port=smtp.port,
                                             recipients=["desk@example.com"],
                                             rate_limit_count=2, rate_limit_window_s=60),
                               store)
        events = [{"event_id": i, "task_id": f"task{i}", "kind": "status",
                   "status": "COMPLETED", "at": 0} for i in range(1, 8)]
        for i, event in enumerate(events):
            done, log = channel.deliver(event, now=float(i))
            assert done
            store.log_delivery(log)
        assert len(smtp.messages) == 2  # two sent, five held
        assert channel.flush_digests(now=30.0) == []  # window still full
        # a restarted channel still holds them (they are in the delivery log)
        channel = EmailChannel(channel.settings, store)
        channel.flush_digests(now=61.0)
        wait_for(lambda: len(smtp.messages) == 3, what="the digest")
        digest = smtp.messages[2]
        assert digest["Subject"] == "[raytasks] digest: 5 task events"
        assert json.loads("[" + digest["X-Raytasks-Event-Ids"] + "]") == [3, 4, 5, 6, 7]
    finally:
        smtp.close()


def test_starttls_and_login(tmp_path: Path) -> None:
    from tests.receivers import self_signed

    tls, ca = self_signed(tmp_path)
    smtp = SmtpSink(tls=tls, login=("raytasks", "pa55"))
    try:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        event = {"event_id": 1, "task_id": "t1", "kind": "status", "status": "FAILED", "at": 0}
        good = EmailSettings(host="127.0.0.1", port=smtp.port, starttls=True, ca_file=ca,
                             username="raytasks", password="pa55", recipients=["d@x.cn"])
        done, log = EmailChannel(good, store).deliver(event, now=0.0)
        assert done and log[0]["outcome"] == "delivered" and len(smtp.messages) == 1
        # a wrong password is a failed delivery (retried later), never a silent drop
        bad = good.model_copy(update={"password": SecretStr("nope")})
        done, log = EmailChannel(bad, store).deliver(event, now=0.0)
        assert not done and log[0]["outcome"] == "failed"
        assert "nope" not in str(log)  # secrets are never logged
        # without STARTTLS the server refuses to take the mail
        plain = good.model_copy(update={"starttls": False})
        done, _ = EmailChannel(plain, store).deliver(event, now=0.0)
        assert not done and len(smtp.messages) == 1
    finally:
        smtp.close()
