"""Issue 7, rows "stall email for everyone", "mail any address" and "webhook deny list
bypassed", attacked over HTTP against a real SMTP server and a real webhook receiver."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from raytasks.settings import EmailSettings, NotifySettings, WebhookTarget
from raytasks.store import open_store
from tests.conftest import wait_for
from tests.httpserver import auth
from tests.receivers import SmtpSink, WebhookReceiver


def _sleepy(**kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": 0.0}, **kw}


@pytest.fixture
def smtp() -> Any:
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.fixture
def mail_api(make_api: Any, smtp: SmtpSink) -> Any:
    return make_api(notify=NotifySettings(email=EmailSettings(
        host="127.0.0.1", port=smtp.port, events=["COMPLETED"], allow_domains=["example.com"],
        rate_limit_count=1, rate_limit_window_s=300)))


def _delivered_to(smtp: SmtpSink, address: str) -> int:
    return sum(1 for m in smtp.messages if m["X-Envelope-To"] == address)


def test_a_poisoned_address_is_refused_at_create_and_patch_and_mail_flows(
        mail_api: Any, smtp: SmtpSink) -> None:
    with httpx.Client(base_url=mail_api.url, headers=auth("alice")) as alice:
        poison = "quant@example.com\u2028Bcc: everyone@example.com"
        # When the attacker creates, or patches, a task with a line separator in an address
        created = alice.post("/tasks", json=_sleepy(notify=[poison]))
        task = alice.post("/tasks", json=_sleepy(notify=["quant@example.com"])).json()
        patched = alice.patch(f"/tasks/{task['id']}", json={"notify": [poison]})
        # Then both are refused naming the field, and nothing reached the store
        for r in (created, patched):
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "notify"
            assert "line separators" in r.json()["errors"][0]["reason"]
        assert alice.get(f"/tasks/{task['id']}").json()["notify"] == ["quant@example.com"]
        # And email keeps flowing: the good task's completion is mailed
        wait_for(lambda: _delivered_to(smtp, "quant@example.com") == 1, what="the email")
        assert not any("everyone" in m["X-Envelope-To"] for m in smtp.messages)


UNALLOWED = [
    ([f"victim{i}@example.com" for i in range(47)], "notify"),
    (["ceo@victim.cn"], "notify.0"),
    (["quant@example.com", "someone@evil.example.net"], "notify.1"),
    (["<victim@example.com>"], "notify"),
    (["Victim <victim@example.com>"], "notify"),
    (["victim@example.com, other@example.com"], "notify"),
]


def test_tasks_cannot_mail_whom_the_operator_did_not_allow(mail_api: Any) -> None:
    with httpx.Client(base_url=mail_api.url, headers=auth("alice")) as alice:
        task = alice.post("/tasks", json=_sleepy()).json()
        for notify, field in UNALLOWED:
            created = alice.post("/tasks", json=_sleepy(notify=notify))
            assert created.status_code == 422, notify
            assert created.json()["errors"][0]["field"] == field, created.text
            assert alice.patch(f"/tasks/{task['id']}", json={"notify": notify}) \
                .status_code == 422


def test_the_rate_limit_counts_one_recipient_however_it_is_spelt(
        mail_api: Any, smtp: SmtpSink) -> None:
    with httpx.Client(base_url=mail_api.url, headers=auth("alice")) as alice:
        # Given a limit of one email per window, and one recipient spelt three ways
        ids = [alice.post("/tasks", json=_sleepy(notify=[spelling])).json()["id"]
               for spelling in ("Victim@Example.COM", "mailto:Victim@example.com",
                                "Victim@EXAMPLE.com")]
        store = open_store(mail_api.service.settings.store_url)
        # When the three tasks complete, Then one email is sent and two wait for the digest
        wait_for(lambda: len(store.deliveries(channel="email")) >= 3, timeout_s=60,
                 what="three deliveries")
        assert sorted(r["outcome"] for r in store.deliveries(channel="email")) == \
            ["delivered", "digest", "digest"]
        assert len(smtp.messages) == 1 and smtp.messages[0]["X-Envelope-To"] == \
            "Victim@example.com"
        assert len(ids) == 3


def test_a_mapped_ipv6_address_does_not_walk_past_the_deny_list(make_api: Any) -> None:
    receiver = WebhookReceiver("s3cret")
    port = receiver.server.server_port
    try:
        # Given the operator denies 127.0.0.1 and a webhook names it as IPv4-mapped IPv6
        api = make_api(notify=NotifySettings(
            deny_networks=[*NotifySettings().deny_networks, "127.0.0.1/32"],
            webhooks=[WebhookTarget(url=f"http://[::ffff:127.0.0.1]:{port}/hook",
                                    secret="s3cret", events=["COMPLETED"])]))
        with httpx.Client(base_url=api.url, headers=auth("alice")) as alice:
            task = alice.post("/tasks", json=_sleepy()).json()
        store = open_store(api.service.settings.store_url)
        channel = f"webhook:http://[::ffff:127.0.0.1]:{port}/hook"
        # When its completion is due, Then it is refused and dead-lettered with the reason
        row = wait_for(lambda: store.deliveries(channel=channel), timeout_s=60,
                       what="the delivery attempt")[0]
        assert row["outcome"] == "dead-letter"
        assert "IPv4 127.0.0.1 inside" in row["detail"] and "127.0.0.1/32" in row["detail"]
        assert receiver.tries == {} and task["status"] == "PENDING"
    finally:
        receiver.close()
