"""The audit trail (issue item 8) over HTTP and from the command line: who did what, with
which token, from where, in which request; readable by an admin only; its queries are
untrusted input like any other."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from tests.conftest import wait_for
from tests.httpserver import TOKENS, auth


def _sleepy(seconds: float = 0.0, **kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": seconds}, **kw}


def _schedule() -> dict[str, Any]:
    return {"name": "nightly", "rule": {"trading": {"every": "day", "at": "15:30"}},
            "template": _sleepy()}


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def test_the_audit_trail_records_who_did_what_from_where(api: Any) -> None:
    alice = httpx.Client(base_url=api.url, headers=auth("alice"), timeout=30)
    root = httpx.Client(base_url=api.url, headers=auth("root"), timeout=30)
    with alice, root:
        # Given alice creates a task and works on it, and a schedule
        made = alice.post("/tasks", json=_sleepy(30))
        task = made.json()["id"]
        cancelled = alice.post(f"/tasks/{task}/cancel")
        wait_for(lambda: alice.get(f"/tasks/{task}").json()["status"] == "CANCELLED")
        assert alice.post(f"/tasks/{task}/retry").status_code == 200
        alice.post(f"/tasks/{task}/cancel")
        wait_for(lambda: alice.get(f"/tasks/{task}").json()["status"] == "CANCELLED")
        batch = alice.post("/tasks/batch", json=[_sleepy(), _sleepy()]).json()
        wait_for(lambda: alice.get(f"/tasks/{batch[0]['id']}").json()["status"]
                 == "COMPLETED")
        deleted = alice.delete(f"/tasks/{batch[0]['id']}")
        schedule = alice.post("/schedules", json=_schedule()).json()["id"]
        alice.post(f"/schedules/{schedule}/pause")
        alice.post(f"/schedules/{schedule}/resume")
        alice.delete(f"/schedules/{schedule}")
        # and signs in to the dashboard and out again
        with httpx.Client(base_url=api.url, timeout=30) as browser:
            signed = browser.post("/session", json={"token": TOKENS["alice"]})
            browser.delete("/session", headers={"X-CSRF-Token": signed.json()["csrf"]})
        # And the admin reads her task (and its own, which is no one else's business)
        read = root.get(f"/tasks/{task}")
        mine = root.post("/tasks", json=_sleepy()).json()["id"]
        root.get(f"/tasks/{mine}")
        # When the admin reads the trail
        page = root.get("/audit", params={"limit": 1000})
        assert page.status_code == 200, page.text
        entries = page.json()["items"]
    # Then every action is there, newest first, with its time, owner, token, address and
    # the request id the response carried
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    by_request = {e["request_id"]: e for e in entries}
    create = by_request[made.headers["x-request-id"]]
    assert (create["action"], create["owner"], create["target"], create["token_id"],
            create["source"]) == ("task.create", "alice", task, _token_id(TOKENS["alice"]),
                                  "127.0.0.1")
    assert create["at"] > 0
    assert by_request[cancelled.headers["x-request-id"]]["action"] == "task.cancel"
    assert by_request[deleted.headers["x-request-id"]]["target"] == batch[0]["id"]
    actions = [e["action"] for e in reversed(entries) if e["owner"] == "alice"]
    assert actions == ["task.create", "task.cancel", "task.retry", "task.cancel", "task.create",
                       "task.create", "task.delete", "schedule.create", "schedule.pause",
                       "schedule.resume", "schedule.delete", "session.open", "session.close"]
    admin_read = by_request[read.headers["x-request-id"]]
    assert (admin_read["action"], admin_read["owner"], admin_read["target_owner"]) == \
        ("task.read", "root", "alice")
    assert [e for e in entries if e["action"] == "task.read" and e["target"] == mine] == []


BAD_QUERIES: list[dict[str, Any]] = [
    {"limit": 0}, {"limit": 10**9}, {"before": -1}, {"before": 2**70}, {"since": "yesterday"},
    {"since": float("inf")}, {"owner": "x" * 500}, {"action": "x" * 100},
    {"target_owner": "y" * 500}, {"owner": "a\x00b"}, {"target_owner": "line\nbreak"},
    {"action": "task.create\r\nX-Injected: 1"},
]


def test_only_an_admin_reads_the_trail_and_its_queries_are_checked(shared_api: Any) -> None:
    with httpx.Client(base_url=shared_api.url, timeout=30) as c:
        # a user, or no token, reads nothing of it
        assert c.get("/audit", headers=auth("alice")).status_code == 403
        assert c.get("/audit").status_code == 401
        # hostile queries are 422s naming the field, never 5xx
        for params in BAD_QUERIES:
            r = c.get("/audit", params=params, headers=auth("root"))
            assert r.status_code == 422, (params, r.text)
        # markup, a path and another owner's name are just text to compare
        for owner in ("<script>alert(1)</script>", "../../etc/passwd", "alice"):
            r = c.get("/audit", params={"owner": owner, "action": "task.create"},
                      headers=auth("root"))
            assert r.status_code == 200 and r.json()["items"] == [], (owner, r.text)
            assert r.headers["content-type"] == "application/json"
