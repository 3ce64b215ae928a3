"""Schedules over HTTP, attacked as a token holder would: another owner's schedule is the
same 404 as a random id on every route, a template is refused like a task create, quotas
name their limit, and what a user typed comes back as the same text, never reinterpreted.
Also the keyset pages of ``GET /tasks`` (``after`` / ``next_after``)."""

from __future__ import annotations

import base64
import itertools
import json
from datetime import datetime
from typing import Any

import httpx

from raytasks.settings import (
    DataSourceSettings,
    EmailSettings,
    NotifySettings,
    QuotaSettings,
    ResourceSettings,
)
from tests.httpserver import auth

MARKUP = '<img src=x onerror="window.__pwned=1">&amp;<script>alert(1)</script>'


def _schedule(name: str = "nightly", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name, "rule": {"trading": {"every": "day", "at": "15:30"}},
        "template": {"name": "scheduled", "task_type": "sleepy",
                     "parameters": {"seconds": 0}}}
    body.update(kw)
    return body


def _client(api: Any, who: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers=auth(who), timeout=60)


def test_another_owners_schedule_is_a_404_like_a_random_id(api: Any) -> None:
    with _client(api, "alice") as alice, _client(api, "bob") as bob, \
            _client(api, "root") as root:
        # Given alice's schedule, with markup in its name and its template's name
        made = alice.post("/schedules", json=_schedule(MARKUP, template={
            "name": MARKUP, "task_type": "sleepy", "tags": [MARKUP[:60]]}))
        assert made.status_code == 201, made.text
        theirs = made.json()
        assert theirs["owner"] == "alice" and theirs["next_run_at"]
        # Then what she typed comes back as the same text, in JSON
        assert theirs["name"] == MARKUP and theirs["template"]["name"] == MARKUP
        assert made.headers["content-type"] == "application/json"
        # When bob reads, pauses, resumes, previews or deletes it, and a random id
        sid, random_id = theirs["id"], "f" * 32
        for method, path in [("GET", "/schedules/{}"), ("POST", "/schedules/{}/pause"),
                             ("POST", "/schedules/{}/resume"), ("DELETE", "/schedules/{}"),
                             ("GET", "/schedules/{}/next?count=5")]:
            on_theirs = bob.request(method, path.format(sid))
            on_random = bob.request(method, path.format(random_id))
            # Then both are the same 404: no oracle for which ids exist
            assert on_theirs.status_code == on_random.status_code == 404, (method, path)
            assert on_theirs.json()["message"].replace(sid, "X") == \
                on_random.json()["message"].replace(random_id, "X")
        # And his list does not show it, and his own create cannot name alice as owner
        assert bob.get("/schedules").json() == []
        forged = bob.post("/schedules", json=_schedule(owner="alice")).json()
        assert forged["owner"] == "bob" and forged["template"]["owner"] == "bob"
        # An admin sees every schedule, may filter by owner, and may create in a name
        assert {s["owner"] for s in root.get("/schedules").json()} == {"alice", "bob"}
        assert [s["id"] for s in root.get("/schedules", params={"owner": "alice"}).json()] \
            == [sid]
        assert root.post("/schedules", json=_schedule(owner="alice")).json()["owner"] \
            == "alice"
        # The owner pauses, resumes, previews and deletes her own
        assert alice.post(f"/schedules/{sid}/pause").json()["paused"] is True
        assert alice.get(f"/schedules/{sid}").json()["paused"] is True
        assert alice.post(f"/schedules/{sid}/resume").json()["paused"] is False
        runs = alice.get(f"/schedules/{sid}/next", params={"count": 7}).json()
        assert len(runs) == 7 and runs == sorted(runs, key=lambda r: r["at"])
        # (in the schedule's zone: 15:30 in Shanghai, on weekdays)
        assert all(r["at"].endswith("+08:00") and r["at"][11:16] == "15:30" for r in runs)
        assert all(datetime.fromisoformat(r["at"]).weekday() < 5 for r in runs)
        for count in (0, 51, -1, "many"):
            r = alice.get(f"/schedules/{sid}/next", params={"count": count})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.count"
        assert alice.delete(f"/schedules/{sid}").status_code == 204
        assert alice.get(f"/schedules/{sid}").status_code == 404
        assert bob.get(f"/schedules/{'x' * 201}").status_code == 422


BAD_SCHEDULES: list[tuple[Any, int, str]] = [
    (_schedule(timezone="Mars/Olympus_Mons"), 422, "timezone"),
    (_schedule(timezone="../../../etc/passwd"), 422, "timezone"),
    (_schedule(timezone="/etc/localtime"), 422, "timezone"),
    (_schedule(rule={"cron": "* * *"}), 422, "rule.cron"),
    (_schedule(rule={"cron": "0 0 31 2 * *"}), 422, "rule.cron"),
    (_schedule(rule={"cron": "0 0 * * *", "interval_s": 3600}), 422, "rule"),
    (_schedule(rule={}), 422, "rule"),
    (_schedule(rule={"interval_s": 0}), 422, "rule.interval_s"),
    (_schedule(rule={"interval_s": 1e12}), 422, "rule.interval_s"),
    (_schedule(rule={"trading": {"at": "25:99"}}), 422, "rule.trading.at"),
    (_schedule(rule={"trading": {"calendar": "NYSE"}}), 422, "rule.trading.calendar"),
    (_schedule(rule={"trading": {"after_close_min": 100000}}), 422,
     "rule.trading.after_close_min"),
    (_schedule(catch_up="forever"), 422, "catch_up"),
    (_schedule(timezone="Asia"), 422, "timezone"),  # a folder of the tz database
    (_schedule(timezone="localtime"), 422, "timezone"),  # the host's own zone file
    (_schedule(timezone="posixrules"), 422, "timezone"),
    (_schedule(ready_by="09:00", timezone="../../etc/localtime"), 422, "timezone"),
    (_schedule(ready_by="25:00"), 422, "ready_by"),
    (_schedule(ready_by="24:00"), 422, "ready_by"),
    (_schedule(ready_by="9:00pm"), 422, "ready_by"),
    (_schedule(ready_by="9:00"), 422, "ready_by"),
    (_schedule(ready_by="09:00\n"), 422, "ready_by"),
    (_schedule(ready_by="\uff10\uff19:\uff10\uff10"), 422, "ready_by"),  # full-width digits
    (_schedule(ready_by="0" * 60_000), 422, "ready_by"),  # under the body limit
    (_schedule(ready_by=900), 422, "ready_by"),
    (_schedule(ready_by={"$gt": ""}), 422, "ready_by"),
    (_schedule(ready_by=["09:00"]), 422, "ready_by"),
    (_schedule(template={"name": "t", "task_type": "sleepy",
                         "deadline": "2026-03-04T09:00:00+08:00"}), 422, "template.deadline"),
    (_schedule(name="x" * 201), 422, "name"),
    (_schedule(name=""), 422, "name"),
    (_schedule(surprise=1), 422, "surprise"),
    (_schedule(end_at="tomorrow-ish"), 422, "end_at"),
    (_schedule(template={"name": "t", "task_type": "astrology"}), 422, "template.task_type"),
    (_schedule(template={"name": "t\nBcc", "task_type": "sleepy"}), 422, "template.name"),
    (_schedule(template={"name": "t", "task_type": "sleepy", "tags": ["a,b"]}), 422,
     "template.tags"),
    (_schedule(template={"name": "t", "task_type": "sleepy", "queue": "mine"}), 422,
     "template.queue"),
    (_schedule(template={"name": "t", "task_type": "sleepy", "timeout_s": 1e9}), 422,
     "template.timeout_s"),
    (_schedule(template={"name": "t", "task_type": "sleepy", "depends_on": ["f" * 32]}),
     422, "template.depends_on"),
    (_schedule(template={"name": "t", "task_type": "sleepy",
                         "notify": ["boss@elsewhere.cn"]}), 422, "template.notify.0"),
    (_schedule(template={"name": "t", "task_type": "prediction", "parameters": {
        "stock_code": "000001.SZ", "days": 5, "source": "/etc"}}), 422,
     "template.parameters.source"),
    (_schedule(template={"name": "t", "task_type": "prediction", "parameters": {
        "stock_code": "000001.SZ", "days": 5, "source": "vendor-x"}}), 422,
     "template.parameters.source"),
    (_schedule(template={"name": "t", "task_type": "backtest", "parameters": {
        "kind": "optimize", "fast_values": list(range(1, 1001)),
        "slow_values": list(range(1, 1001))}}), 422, "template.parameters.fast_values"),
    (b'{"name": "n", "rule": {"interval_s": NaN}, "template": {"name": "t", '
     b'"task_type": "sleepy"}}', 422, "body"),
    (b'{"name": "\\ud800", "rule": {"interval_s": 60}, "template": {"name": "t", '
     b'"task_type": "sleepy"}}', 422, "body"),
    (json.dumps(_schedule(template={"name": "t", "task_type": "sleepy", "parameters": {
        "blob": "x" * 70_000}})).encode(), 413, "body"),
]


def test_schedule_inputs_are_refused_like_task_creates_and_quotas_name_their_limit(
        make_api: Any) -> None:
    api = make_api(
        quotas={"*": QuotaSettings(max_schedules=2, min_schedule_interval_s=600)},
        notify=NotifySettings(email=EmailSettings(allow_domains=["example.com"])),
        resources=ResourceSettings(data_sources={"csv": DataSourceSettings(
            kind="csv", path="/nonexistent")}))
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        # Given bad schedules of every kind
        for body, status, field in BAD_SCHEDULES:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = alice.post("/schedules", content=content,
                           headers={"Content-Type": "application/json"})
            # Then each is refused with its status, naming the field
            assert r.status_code == status, (field, r.status_code, r.text[:400])
            if status == 422:
                fields = [e["field"] for e in r.json()["errors"]]
                assert any(f == field or f.startswith(field + ".") for f in fields), \
                    (field, fields)
        assert alice.get("/schedules").json() == []
        # When a schedule would run more often than the owner's minimum interval
        r = alice.post("/schedules", json=_schedule(rule={"cron": "*/5 * * * *"}))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "rule"
        assert "min_schedule_interval_s" in r.json()["errors"][0]["reason"]
        # And an allowed address, a named resource and an hourly cron are accepted
        ok = alice.post("/schedules", json=_schedule(rule={"cron": "0 * * * *"}, template={
            "name": "t", "task_type": "prediction", "notify": ["me@example.com"],
            "parameters": {"stock_code": "000001.SZ", "days": 5, "source": "csv"}}))
        assert ok.status_code == 201, ok.text
        assert alice.post("/schedules", json=_schedule()).status_code == 201
        # When alice asks for a third, Then 429 names the limit
        r = alice.post("/schedules", json=_schedule())
        assert r.status_code == 429 and r.json()["limit"] == "max_schedules"
        assert "max_schedules=2" in r.json()["message"]
        # And bob's own allowance is untouched by hers
        assert bob.post("/schedules", json=_schedule()).status_code == 201


def test_ready_by_is_kept_shown_and_previewed_over_http_and_the_cli(api: Any) -> None:
    from tests.ray.test_cli import _run

    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        # Given alice's nightly schedule after the close, ready by 09:00 Shanghai time
        made = alice.post("/schedules", json=_schedule(
            rule={"trading": {"every": "day", "at": "16:00"}}, ready_by="09:00"))
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        # Then create, read and list all show it, and its runs say when each is due:
        assert made.json()["ready_by"] == "09:00"
        assert alice.get(f"/schedules/{sid}").json()["ready_by"] == "09:00"
        assert [s["ready_by"] for s in alice.get("/schedules").json()] == ["09:00"]
        runs = alice.get(f"/schedules/{sid}/next", params={"count": 10}).json()
        for run, following in itertools.pairwise(runs):
            due = datetime.fromisoformat(run["deadline"])
            # 09:00 in the schedule's zone, of the session after the run (the next run's day)
            assert run["deadline"].endswith("+08:00") and due.strftime("%H:%M") == "09:00"
            assert due.date() == datetime.fromisoformat(following["at"]).date()
        # And one without ready_by shows none, and its runs carry no deadline
        plain = bob.post("/schedules", json=_schedule()).json()
        assert plain["ready_by"] is None
        assert {r["deadline"] for r in bob.get(f"/schedules/{plain['id']}/next").json()} \
            == {None}
    # The CLI adds one with --ready-by, lists and previews it, and refuses a bad time
    added = _run(api.service, "schedule", "add", "nightly", "sleepy", "--trading", "day",
                 "--at", "16:00", "--ready-by", "09:00", "--json")
    assert added.returncode == 0, added.stderr
    cli_id = json.loads(added.stdout)["id"]
    assert json.loads(added.stdout)["ready_by"] == "09:00"
    listed = _run(api.service, "schedule", "ls")
    line = next(x for x in listed.stdout.splitlines() if x.startswith(cli_id))
    assert "09:00" in line.split()
    shown = _run(api.service, "schedule", "next", cli_id, "-n", "2")
    assert shown.stdout.count("09:00:00+08:00") == 2 and "(due " in shown.stdout
    bad = _run(api.service, "schedule", "add", "n", "sleepy", "--cron", "0 16 * * 1-5",
               "--ready-by", "9:00pm", "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["errors"][0]["field"] == "ready_by"


def test_task_pages_follow_next_after_and_stay_the_callers(api: Any) -> None:
    with _client(api, "alice") as alice, _client(api, "bob") as bob:
        # Given five tasks of alice's and three of bob's
        mine = alice.post("/tasks/batch", json=[{"name": f"a{i}", "task_type": "sleepy",
                                                 "parameters": {"seconds": 0}}
                                                for i in range(5)]).json()
        bob.post("/tasks/batch", json=[{"name": f"b{i}", "task_type": "sleepy"}
                                       for i in range(3)])
        # When she walks her pages of two with next_after
        seen, after, cursors = [], None, []
        while True:
            page = alice.get("/tasks", params={"limit": 2, "order_by": "created_at",
                                               **({"after": after} if after else {})}).json()
            seen += [t["id"] for t in page["items"]]
            after = page["next_after"]
            if not after:
                break
            cursors.append(after)
        # Then she sees each of her tasks once, and none of bob's
        assert len(seen) == len(set(seen)) and set(seen) == {t["id"] for t in mine}
        # And her cursor in bob's hands pages only through his own tasks
        theirs = bob.get("/tasks", params={"limit": 10, "order_by": "created_at",
                                           "after": cursors[0]}).json()
        assert all(t["owner"] == "bob" for t in theirs["items"])
        # A cursor the server did not make is a 422 naming it, never a 5xx
        for bad in ("not-a-cursor", "W10=", "eyJ4IjogMX0=", "x" * 401, "WzEsIDIsIDNd",
                    "WyJhIiwgMV0="):
            r = alice.get("/tasks", params={"after": bad})
            assert r.status_code == 422, (bad, r.text)
        # and one of the right shape but the wrong type of key is no 5xx either
        wrong = base64.urlsafe_b64encode(b'["zzz", "f"]').decode()
        assert alice.get("/tasks", params={"after": wrong}).status_code in (200, 422)


def test_tokens_from_the_token_file_work_at_once_and_stop_when_revoked(api: Any) -> None:
    from raytasks import tokens

    settings = api.service.settings
    with httpx.Client(base_url=api.url) as c:
        # Given a token made by `raytasks token create` while the server runs
        token, _ = tokens.create(settings, "carol")
        bearer = {"Authorization": f"Bearer {token}"}
        # Then it works at once, as carol, on the API and for the dashboard login
        made = c.post("/schedules", json=_schedule(), headers=bearer)
        assert made.status_code == 201 and made.json()["owner"] == "carol"
        assert c.post("/session", json={"token": token}).json()["owner"] == "carol"
        assert c.get("/schedules", headers=auth("alice")).json() == []
        # When it is revoked, Then it is refused without a restart
        tokens.revoke(settings, owner="carol")
        assert c.get("/schedules", headers=bearer).status_code == 401
        assert c.post("/session", json={"token": token}).status_code == 401
        # And a token file that is not one leaves the configured tokens working
        tokens.token_file(settings).write_text("{not json")
        assert c.get("/schedules", headers=bearer).status_code == 401
        assert c.get("/schedules", headers=auth("alice")).status_code == 200
