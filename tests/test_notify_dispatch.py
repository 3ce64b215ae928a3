"""The dispatcher against a real SQLite outbox and a real SMTP server, on a test clock:
a poisoned or failing event is retried, then dead-lettered, and never holds up the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raytasks.notify import Dispatcher
from raytasks.settings import EmailSettings, NotifySettings
from raytasks.store import open_store
from tests.conftest import wait_for
from tests.receivers import SmtpSink


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def smtp() -> Any:
    sink = SmtpSink(refuse=("gone@example.com",))
    yield sink
    sink.close()


def _outbox(tmp_path: Path) -> Any:
    return open_store(f"sqlite:///{tmp_path / 'outbox.db'}")


def _append(store: Any, task_id: str, payload: str | None = None) -> int:
    body = payload if payload is not None else json.dumps(
        {"task_id": task_id, "status": "COMPLETED", "priority": 2, "at": 0})
    return int(store.append_events([{"task_id": task_id[:64], "kind": "status",
                                     "payload": body, "created_at": 0.0}])[0])


def _email(smtp: SmtpSink, recipients: list[str], **kw: Any) -> NotifySettings:
    return NotifySettings(email=EmailSettings(
        host="127.0.0.1", port=smtp.port, recipients=recipients, events=["COMPLETED"],
        max_attempts=3, backoff_base_s=10.0, backoff_max_s=10.0, **kw))


def _outcomes(store: Any, event_id: int) -> list[str]:
    return [r["outcome"] for r in store.deliveries(channel="email") if r["event_id"] == event_id]


def test_a_message_that_cannot_be_built_is_dead_lettered_and_the_next_one_goes(
        tmp_path: Path, smtp: SmtpSink) -> None:
    store = _outbox(tmp_path)
    dispatcher = Dispatcher(store, _email(smtp, ["desk@example.com"]), clock=Clock())
    # Given a poisoned event (a header value with a line break), an unparsable one, a good one
    poisoned = _append(store, "evil\r\nBcc: victim@example.com")
    garbage = _append(store, "t-garbage", payload="{not json")
    good = _append(store, "t-good")
    # When the dispatcher runs once
    dispatcher.tick()
    # Then the poisoned ones are dead-lettered with their reason, and the good one is mailed
    wait_for(lambda: len(smtp.messages) == 1, what="the good event's email")
    assert "t-good" in smtp.messages[0]["Subject"]
    assert _outcomes(store, poisoned) == ["dead-letter"]
    assert _outcomes(store, garbage) == ["dead-letter"]
    reasons = {r["event_id"]: r["detail"] for r in store.deliveries(channel="email")}
    assert "cannot be built" in reasons[poisoned] and "JSONDecodeError" in reasons[garbage]
    assert _outcomes(store, good) == ["delivered"]
    assert store.get_cursor("email") == good
    assert not any("victim" in m["X-Envelope-To"] for m in smtp.messages)


def test_a_refused_recipient_is_retried_then_dead_lettered_without_blocking_others(
        tmp_path: Path, smtp: SmtpSink) -> None:
    store, clock = _outbox(tmp_path), Clock()
    settings = _email(smtp, ["gone@example.com", "desk@example.com"])
    dispatcher = Dispatcher(store, settings, clock=clock)
    first = _append(store, "t-1")
    dispatcher.tick()
    # the refused recipient waits for its retry; the other recipient already has the mail
    assert [m["X-Envelope-To"] for m in smtp.messages] == ["desk@example.com"]
    second = _append(store, "t-2")
    dispatcher.tick()
    # Then the event behind it was delivered while the first one waits
    assert sorted(_outcomes(store, second)) == ["delivered", "retry"]
    # And a notifier restarted now still knows the pending retries (from the log)
    dispatcher = Dispatcher(store, settings, clock=clock)
    assert {k[0] for k in dispatcher.retries["email"]} == {first, second}
    for _ in range(3):
        clock.now += 11.0
        dispatcher.tick()
    gone = [r for r in store.deliveries(channel="email") if r["target"] == "gone@example.com"]
    # (once nothing is pending, the log's "retry" rows read "retried")
    for event in (first, second):
        assert [(r["attempt"], r["outcome"]) for r in gone if r["event_id"] == event] == [
            (1, "retried"), (2, "retried"), (3, "dead-letter")]
    assert "gave up after 3 attempts" in gone[-1]["detail"] and "550" in gone[-1]["detail"]
    assert dispatcher.retries["email"] == {}
    assert store.deliveries(channel="email", outcome="retry") == []


def test_an_unreachable_server_pauses_the_channel_and_loses_nothing(
        tmp_path: Path, smtp: SmtpSink) -> None:
    store, clock = _outbox(tmp_path), Clock()
    down = NotifySettings(email=EmailSettings(
        host="127.0.0.1", port=1, recipients=["desk@example.com"], events=["COMPLETED"],
        max_attempts=5, backoff_base_s=10.0, backoff_max_s=10.0))
    dispatcher = Dispatcher(store, down, clock=clock)
    events = [_append(store, f"t-{i}") for i in range(3)]
    # When the server is unreachable, the channel pauses after one try
    dispatcher.tick()
    assert [r["event_id"] for r in store.deliveries(channel="email")] == [events[0]]
    dispatcher.tick()  # still paused: nothing more is tried
    assert len(store.deliveries(channel="email")) == 1
    # Then, once the server is back, every event arrives
    dispatcher = Dispatcher(store, _email(smtp, ["desk@example.com"]), clock=clock)
    clock.now += 11.0
    dispatcher.tick()
    wait_for(lambda: len(smtp.messages) == 3, what="all three emails")
    assert sorted(m["Subject"][16:19] for m in smtp.messages) == ["t-0", "t-1", "t-2"]
