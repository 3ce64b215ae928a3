"""The HTTP edge's small parts on their own, without Ray: what a socket is sent and how
much it remembers, and the per-owner count of live log readers."""

from __future__ import annotations

from typing import Any

import pytest

from raytasks.errors import QuotaExceededError
from raytasks.server.auth import Principal
from raytasks.server.common import LiveReaders
from raytasks.server.socket import MAX_TRACKED, EventStream, HelloFilter
from raytasks.server.throttle import SlidingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _progress(task_id: str, pct: float = 0.5, owner: str = "alice") -> dict[str, Any]:
    return {"kind": "progress", "task_id": task_id, "owner": owner, "percentage": pct}


def _status(task_id: str, status: str, owner: str = "alice") -> dict[str, Any]:
    return {"kind": "status", "task_id": task_id, "owner": owner, "status": status,
            "task_type": "sleepy", "error": None}


def test_a_socket_sees_its_owners_events_with_progress_throttled() -> None:
    clock = Clock()
    stream = EventStream(Principal("alice", "user"), None, HelloFilter(status=["FAILED"]),
                         interval_s=1.0, clock=clock)
    assert stream.visible(_status("t", "FAILED", owner="bob")) is None
    assert stream.visible(_status("t", "COMPLETED")) is None  # filtered out
    assert stream.visible(_status("t", "FAILED")) is not None
    sent = []
    for t in (0.0, 0.5, 1.0, 1.2):
        clock.now = t
        sent.append(stream.visible(_progress("u")) is not None)
    assert sent == [True, False, True, False]
    assert stream.visible(_progress("u", pct=1.0)) is not None  # the end always goes


def test_a_sockets_progress_memory_is_bounded() -> None:
    clock = Clock()
    stream = EventStream(Principal("root", "admin"), None, HelloFilter(), interval_s=1.0,
                         clock=clock)
    # Given progress from many tasks, a finished task's entry goes at once
    stream.visible(_progress("done"))
    stream.visible(_status("done", "COMPLETED"))
    assert "done" not in stream.last_progress
    # When more tasks report than the socket remembers, over a longer time than the interval
    for i in range(MAX_TRACKED * 2):
        clock.now = i * 0.001
        stream.visible(_progress(f"t{i}"))
    # Then the map stays within its bound, and a recent task is still throttled
    assert len(stream.last_progress) <= MAX_TRACKED
    recent = f"t{MAX_TRACKED * 2 - 1}"
    assert recent in stream.last_progress
    assert stream.visible(_progress(recent)) is None


def test_live_readers_are_counted_per_owner_and_freed_once() -> None:
    readers = LiveReaders(limit=2)
    first, second = readers.acquire("alice"), readers.acquire("alice")
    with pytest.raises(QuotaExceededError) as refused:
        readers.acquire("alice")
    assert refused.value.data["limit"] == "live_log_readers"
    readers.acquire("bob")  # another owner has its own
    first()
    first()  # a second release of the same slot frees nothing more
    assert readers.by_owner["alice"] == 1
    readers.acquire("alice")
    with pytest.raises(QuotaExceededError):
        readers.acquire("alice")
    second()
    assert readers.by_owner["alice"] == 1


def test_a_window_holds_a_key_past_the_limit_until_it_has_room() -> None:
    now = [1000.0]
    wrong = SlidingWindow(limit=3, window_s=60.0, clock=lambda: now[0], max_keys=2)
    # Given three wrong tokens from one address, a second apart
    for _ in range(3):
        assert wrong.wait_s("10.0.0.1") == 0.0
        wrong.add("10.0.0.1")
        now[0] += 1.0
    # Then it is held until the first of them leaves the window; others are not
    assert wrong.wait_s("10.0.0.1") == pytest.approx(57.0)
    assert wrong.wait_s("10.0.0.2") == 0.0
    now[0] += 57.0
    assert wrong.wait_s("10.0.0.1") == 0.0  # room for one more
    wrong.add("10.0.0.1")
    assert wrong.wait_s("10.0.0.1") == pytest.approx(1.0)
    # And memory stays bounded: the key seen longest ago is forgotten first
    wrong.add("10.0.0.2")
    wrong.add("10.0.0.3")
    assert wrong.wait_s("10.0.0.1") == 0.0
