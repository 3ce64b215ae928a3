"""Webhooks and email through real peers; a notifier killed mid-delivery loses nothing."""

from __future__ import annotations

from typing import Any

import ray

from raytasks import TaskCreateRequest, TaskManager, TaskStatus, register_task_type
from raytasks.settings import EmailSettings, NotifySettings, WebhookTarget
from raytasks.store import open_store
from tests.conftest import wait_for
from tests.helpers import SleepParams, sleepy
from tests.receivers import SmtpSink, WebhookReceiver

SECRET = "s3cret-for-tests"


def _req(**params: Any) -> TaskCreateRequest:
    extra = {k: params.pop(k) for k in ("max_retries", "notify") if k in params}
    return TaskCreateRequest(name="n", task_type="sleepy", parameters=params, **extra)


def _start(make_service: Any, **notify: Any) -> Any:
    service = make_service(notify=NotifySettings(**notify))
    register_task_type("sleepy", sleepy, params_model=SleepParams, workers=1, runtime=service)
    return service


def test_signed_webhooks_retried_until_delivered_once_by_id(make_service: Any) -> None:
    # Given a receiver that verifies signatures and fails each event's first two tries
    receiver = WebhookReceiver(SECRET, fail_first=2)
    try:
        service = _start(make_service, webhooks=[WebhookTarget(
            url=receiver.url, secret=SECRET, events=["RUNNING", "COMPLETED"],
            backoff_base_s=0.05)])
        tm = TaskManager(service)
        # When a task runs
        task = tm.submit_sync(_req(seconds=0.1))
        tm.wait_sync(task.id, timeout_s=30)
        # Then both events arrive, signed, in order, once each after de-duplication
        got = wait_for(lambda: len(receiver.unique_accepted()) == 2 and receiver.unique_accepted(),
                       what="two webhook events")
        assert [p["status"] for p in got.values()] == ["RUNNING", "COMPLETED"]
        assert all(p["task_id"] == task.id for p in got.values())
        assert receiver.bad_signatures == 0
        assert all(receiver.tries[event_id] == 3 for event_id in got)
        log = open_store(service.settings.store_url).deliveries(channel="webhook:" + receiver.url)
        for event_id in got:  # each event on its own: two retried tries, then delivered
            assert [r["outcome"] for r in log if r["event_id"] == event_id] == \
                ["retried", "retried", "delivered"]
    finally:
        receiver.close()


def test_completion_and_failure_emails_reach_an_smtp_server(make_service: Any) -> None:
    smtp = SmtpSink()
    try:
        service = _start(make_service, email=EmailSettings(
            host="127.0.0.1", port=smtp.port, recipients=["desk@example.com"],
            allow_domains=["example.com"], events=["COMPLETED", "FAILED"]))
        tm = TaskManager(service)
        ok = tm.submit_sync(_req(seconds=0.0, notify=["mailto:quant@example.com"]))
        bad = tm.submit_sync(_req(fail_attempts=1, max_retries=0))
        tm.wait_all_sync([ok.id, bad.id], timeout_s=30)
        wait_for(lambda: len(smtp.messages) >= 3, what="three emails")
        by_subject = {(m["Subject"], m["X-Envelope-To"]) for m in smtp.messages}
        assert (f"[raytasks] task {ok.id[:12]} COMPLETED", "desk@example.com") in by_subject
        assert (f"[raytasks] task {ok.id[:12]} COMPLETED", "quant@example.com") in by_subject
        assert (f"[raytasks] task {bad.id[:12]} FAILED", "desk@example.com") in by_subject
        failure = next(m for m in smtp.messages if "FAILED" in m["Subject"])
        parts = {p.get_content_type(): p.get_payload(decode=True).decode()
                 for p in failure.walk() if not p.is_multipart()}
        assert "planned failure on attempt 0" in parts["text/plain"]
        assert "<li>" in parts["text/html"]
    finally:
        smtp.close()


def test_a_notifier_killed_mid_delivery_loses_nothing(make_service: Any) -> None:
    # Given a slow receiver, so deliveries are in flight when the notifier dies
    receiver = WebhookReceiver(SECRET, delay_s=0.15)
    try:
        service = _start(make_service, webhooks=[WebhookTarget(
            url=receiver.url, secret=SECRET, events=["COMPLETED"], backoff_base_s=0.05)])
        tm = TaskManager(service)
        tasks = tm.submit_many_sync([_req(seconds=0.0) for _ in range(12)])
        wait_for(lambda: len(receiver.unique_accepted()) >= 2, what="first deliveries")
        # When the notifier actor is killed (Ray restarts it)
        ray.kill(service.handle("notifier"), no_restart=False)
        tm.wait_all_sync([t.id for t in tasks], timeout_s=60)
        # Then every completion still arrives
        wait_for(lambda: {p["task_id"] for p in receiver.unique_accepted().values()}
                 == {t.id for t in tasks}, timeout_s=60, what="all twelve completions")
        assert all(p["status"] == TaskStatus.COMPLETED for p in
                   receiver.unique_accepted().values())
    finally:
        receiver.close()


def test_client_callbacks_catch_up_after_the_notifier_restarts(make_service: Any) -> None:
    from raytasks import TaskNotificationService

    service = _start(make_service)
    tm = TaskManager(service)
    seen: list[Any] = []
    sub = TaskNotificationService(service).subscribe(seen.append)
    try:
        first = tm.submit_sync(_req(seconds=0.0))
        wait_for(lambda: any(e.task_id == first.id and e.status == "COMPLETED" for e in seen
                             if e.kind == "status"), what="the first completion")
        # When the notifier dies and tasks finish while it restarts
        ray.kill(service.handle("notifier"), no_restart=False)
        later = tm.submit_many_sync([_req(seconds=0.0) for _ in range(3)])
        tm.wait_all_sync([t.id for t in later], timeout_s=30)
        # Then the callback still receives each of their status changes, once
        wanted = {(t.id, s) for t in later for s in ("PENDING", "RUNNING", "COMPLETED")}
        wait_for(lambda: wanted <= {(e.task_id, e.status) for e in seen if e.kind == "status"},
                 timeout_s=30, what="the events from the outage")
        ids = [e.event_id for e in seen]
        assert ids == sorted(set(ids))
    finally:
        sub.close()
