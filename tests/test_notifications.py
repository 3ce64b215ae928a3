"""The notification hub's stream: who is told that a stream waits, and when."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from raytasks.notifications import NotificationHub
from raytasks.store import SqlTaskStore


def _event(task_id: str) -> dict[str, object]:
    payload = {"task_id": task_id, "status": "PENDING", "previous": None, "attempt": 0,
               "priority": 2, "task_type": "noop", "owner": None, "error": None, "at": 1.0}
    return {"task_id": task_id, "kind": "status", "payload": json.dumps(payload),
            "created_at": 1.0}


def test_a_waiting_stream_asks_for_pokes_and_is_answered_by_the_next_poll(
        tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], list[int], list[str]]:
        store = SqlTaskStore(f"sqlite:///{tmp_path / 'store.db'}")
        hub = NotificationHub(store)
        asked: list[int] = []
        hub.on_listen = lambda: asked.append(hub.listeners)
        # Given a stream with nothing new to read: it waits, and says so once
        waiting = asyncio.create_task(hub.stream(after_id=hub.cursor, timeout_s=5.0))
        await asyncio.sleep(0.05)
        listening = [hub.listeners]
        # When an event commits and the hub polls (what a poke does)
        store.append_events([_event("t1")])
        await hub.poll()
        got = await waiting
        listening.append(hub.listeners)
        # A stream that has something to read never waits, so it asks for nothing
        await hub.stream(after_id=0, timeout_s=5.0)
        store.close()
        return asked, listening, [n.task_id for n in got]

    asked, listening, got = asyncio.run(scenario())
    assert asked == [1]
    assert listening == [1, 0]
    assert got == ["t1"]
