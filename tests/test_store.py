"""One store contract, run against SQLite and a real throwaway PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from raytasks.errors import StoreError
from raytasks.models import TaskPriority, TaskQuery, TaskStatus
from raytasks.store import SCHEMA_VERSION, SqlTaskStore, WriteBatch, open_store


def _row(task_id: str, **over: Any) -> dict[str, Any]:
    now = over.pop("created_at", time.time())
    row = {"id": task_id, "name": f"task {task_id}", "task_type": "prediction",
           "status": "PENDING", "priority": 2, "queue": "default",
           "parameters": json.dumps({"stock_code": "000001.SZ"}), "attempt": 0,
           "max_retries": 3, "timeout_s": 60.0, "depends_on": "[]", "idempotency_key": None,
           "tags": [], "owner": None, "notify": "[]", "cancel_requested": False,
           "queued": True, "lease_token": 0, "created_at": now, "updated_at": now}
    row.update(over)
    return row


@pytest.fixture
def store(store_url: str) -> Any:
    s = open_store(store_url)
    yield s
    s.close()


def test_insert_and_read_back_every_field(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("a", tags=["alpha", "beta"], owner="quant1",
                                          idempotency_key="k1")]))
    task = store.get("a")
    assert task is not None
    assert (task.name, task.status, task.priority) == ("task a", TaskStatus.PENDING,
                                                       TaskPriority.MEDIUM)
    assert task.parameters == {"stock_code": "000001.SZ"}
    assert task.tags == ["alpha", "beta"] and task.owner == "quant1"
    assert task.created_at.tzinfo is not None
    assert store.get("missing") is None
    assert store.find_idempotent(["k1", "k2"])["k1"].id == "a"


def test_idempotency_keys_are_unique(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("a", idempotency_key="same")]))
    with pytest.raises(sa.exc.IntegrityError):
        store.commit(WriteBatch(inserts=[_row("b", idempotency_key="same")]))
    assert store.get("b") is None  # the failed batch left nothing behind


def test_fenced_update_applies_only_with_the_current_token(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("a", status="RUNNING", lease_token=2)]))
    store.commit(WriteBatch(updates=[("a", {"status": "COMPLETED", "result": "1"}, 1)]))
    assert store.get("a").status is TaskStatus.RUNNING  # type: ignore[union-attr]
    store.commit(WriteBatch(updates=[("a", {"status": "COMPLETED", "result": "2"}, 2)]))
    task = store.get("a")
    assert task is not None and task.status is TaskStatus.COMPLETED and task.result == 2


def test_query_filters_pagination_and_ordering(store: SqlTaskStore) -> None:
    base = float(int(time.time()))  # whole seconds: datetimes keep only microseconds
    rows = []
    for i in range(30):
        rows.append(_row(f"t{i:02d}", created_at=base + i, priority=1 + i % 3,
                         status=["PENDING", "RUNNING", "COMPLETED"][i % 3],
                         task_type="backtest" if i % 2 else "prediction",
                         owner="alice" if i < 10 else "bob",
                         tags=["x"] if i % 5 == 0 else ["y", "x_"],
                         name=f"sweep {i}" if i % 4 == 0 else f"job {i}"))
    store.commit(WriteBatch(inserts=rows))
    items, total = store.query(TaskQuery(limit=7))
    assert total == 30 and [t.id for t in items] == [f"t{i:02d}" for i in range(29, 22, -1)]
    items, total = store.query(TaskQuery(offset=28, limit=7, order_by="created_at"))
    assert [t.id for t in items] == ["t28", "t29"] and total == 30
    items, total = store.query(TaskQuery(status=[TaskStatus.COMPLETED],
                                         task_type=["backtest"]))
    assert {t.id for t in items} == {f"t{i:02d}" for i in range(30) if i % 6 == 5}
    items, _ = store.query(TaskQuery(owner="alice", priority=[TaskPriority.HIGH]))
    assert {t.id for t in items} == {"t00", "t03", "t06", "t09"}
    items, _ = store.query(TaskQuery(tags=["x"]))  # exact tag, not a prefix ("x_")
    assert {t.id for t in items} == {f"t{i:02d}" for i in range(0, 30, 5)}
    items, _ = store.query(TaskQuery(text="sweep"))
    assert {t.id for t in items} == {f"t{i:02d}" for i in range(0, 30, 4)}
    items, _ = store.query(TaskQuery(
        created_after=datetime.fromtimestamp(base + 10, tz=UTC),
        created_before=datetime.fromtimestamp(base + 12, tz=UTC)))
    assert {t.id for t in items} == {"t10", "t11"}
    items, _ = store.query(TaskQuery(order_by="priority", limit=3))
    assert all(t.priority is TaskPriority.HIGH for t in items)


def test_active_status_counts_and_delete(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("p"), _row("r", status="RUNNING"),
                                     _row("c", status="COMPLETED")]))
    assert {t.id for t in store.active()} == {"p", "r"}
    assert store.status_counts() == {"PENDING": 1, "RUNNING": 1, "COMPLETED": 1}
    store.commit(WriteBatch(deletes=["c"]))
    assert store.get("c") is None


def test_events_get_increasing_ids_in_commit_order(store: SqlTaskStore) -> None:
    events = [{"task_id": "a", "kind": "status", "payload": json.dumps({"n": i}),
               "created_at": time.time()} for i in range(5)]
    ids = store.commit(WriteBatch(inserts=[_row("a")], events=events[:3]))
    more = store.append_events(events[3:])
    assert ids == sorted(ids) and more[0] > ids[-1] and len(ids + more) == 5
    assert [json.loads(e["payload"])["n"] for e in store.events_after(ids[0])] == [1, 2, 3, 4]
    assert store.max_event_id() == more[-1]


def test_progress_and_task_types_are_upserted(store: SqlTaskStore) -> None:
    store.save_progress([{"task_id": "a", "payload": '{"p": 1}', "updated_at": 1.0}])
    store.save_progress([{"task_id": "a", "payload": '{"p": 2}', "updated_at": 2.0}])
    assert store.get_progress("a")["payload"] == '{"p": 2}'  # type: ignore[index]
    store.save_task_type("spin", b"v1", 1)
    store.save_task_type("spin", b"v2", 2)
    assert store.task_types() == [("spin", b"v2", 2)]


def test_schema_is_versioned_and_a_newer_store_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO rt_schema (version, applied_at) VALUES (99, 0)"))
    store.close()
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(store_url)
