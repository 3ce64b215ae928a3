"""Floods over HTTP, attacked as a token holder would: one owner at full speed on
``POST /tasks`` and ``GET /tasks`` is paced with 429 and ``Retry-After``, and another
owner's calls keep being answered. (The p99 of the other owner, quiet and under the
flood, is a benchmark: ``raytasks bench flood``.)"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx

from raytasks.settings import ApiSettings
from tests.httpserver import api_tokens, auth

RATE, BURST_S = 20.0, 1.0


def _sleepy(**kw: Any) -> dict[str, Any]:
    return {"name": "s", "task_type": "sleepy", "parameters": {"seconds": 60}, **kw}


def _hammer(url: str, calls: int, out: list[httpx.Response]) -> None:
    with httpx.Client(base_url=url, timeout=60, headers=auth("bob")) as http:
        for i in range(calls):
            out.append(http.post("/tasks", json=_sleepy()) if i % 2 == 0
                       else http.get("/tasks", params={"limit": 5}))


def test_an_owner_at_full_speed_is_paced_and_another_owner_is_served(make_api: Any) -> None:
    # Given creates and reads paced at 20 a second (a burst of 20) per owner
    api = make_api(sleepy_workers=0, api=ApiSettings(
        tokens=api_tokens(), max_body_bytes=64 * 1024, max_creates_per_s=RATE,
        max_reads_per_s=RATE, rate_burst_s=BURST_S, rate_limit_delay_s=0.01))
    # When bob hammers POST /tasks and GET /tasks from four connections at once
    bobs: list[list[httpx.Response]] = [[] for _ in range(4)]
    started = time.monotonic()
    threads = [threading.Thread(target=_hammer, args=(api.url, 150, out)) for out in bobs]
    for t in threads:
        t.start()
    # and alice, meanwhile, creates and lists within her own rate
    with httpx.Client(base_url=api.url, timeout=60, headers=auth("alice")) as alice:
        hers = [alice.post("/tasks", json=_sleepy()) for _ in range(10)]
        hers += [alice.get("/tasks", params={"limit": 5}) for _ in range(10)]
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    responses = [r for out in bobs for r in out]

    # Then alice was answered every time
    assert [r.status_code for r in hers] == [201] * 10 + [200] * 10, \
        [r.text for r in hers if r.status_code >= 300][:3]
    # and bob got 429 TooManyRequests with Retry-After, naming the limit
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 201, 429}, codes
    refused = [r for r in responses if r.status_code == 429]
    assert refused, codes
    for r in refused:
        body = r.json()
        assert body["error"] == "TooManyRequests"
        assert body["limit"] in ("max_creates_per_s", "max_reads_per_s")
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    # and no more of his calls went through than his rate allows over the whole run
    allowed = RATE * BURST_S + RATE * elapsed + 1
    assert codes[201] <= allowed and codes[200] <= allowed, (codes, elapsed)
    # and what went through was done: every 201 is a task of his, and nothing else is
    with httpx.Client(base_url=api.url, timeout=60, headers=auth("root")) as root:
        time.sleep(BURST_S)  # root is paced too: let nothing of this test hold it
        listed = root.get("/tasks", params={"owner": "bob", "limit": 1000}).json()
    assert listed["total"] == codes[201]


def test_a_refused_owner_is_let_in_again_after_retry_after(make_api: Any) -> None:
    # Given creates paced at 1 a second (a burst of 1)
    api = make_api(sleepy_workers=0, api=ApiSettings(
        tokens=api_tokens(), max_body_bytes=64 * 1024, max_creates_per_s=1.0,
        rate_burst_s=1.0))
    with httpx.Client(base_url=api.url, timeout=60, headers=auth("bob")) as bob:
        assert bob.post("/tasks", json=_sleepy()).status_code == 201
        # When bob calls again at once, he is refused, told to wait a second
        refused = bob.post("/tasks", json=_sleepy())
        assert refused.status_code == 429, refused.text
        wait_s = int(refused.headers["Retry-After"])
        assert wait_s == 1
        # Then after waiting that long his call is accepted (a batch is one call)
        time.sleep(wait_s)
        again = bob.post("/tasks/batch", json=[_sleepy(), _sleepy()])
        assert again.status_code == 201, again.text
