"""One store contract, run against SQLite and a real throwaway PostgreSQL."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from raytasks.errors import InvalidParametersError, StoreError
from raytasks.messages import ProgressReport
from raytasks.models import TaskPriority, TaskQuery, TaskStatus
from raytasks.store import SCHEMA_VERSION, SqlTaskStore, WriteBatch, open_store
from raytasks.store.base import RowUpdate, StaleWriteError
from raytasks.store.sql import KEPT_WRITERS


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
    assert store.find_idempotent("quant1", ["k1", "k2"])["k1"].id == "a"
    assert store.find_idempotent("", ["k1"]) == {}  # keys belong to their owner


def test_idempotency_keys_are_unique_per_owner(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("a", idempotency_key="same", owner="alice")]))
    with pytest.raises(sa.exc.IntegrityError):
        store.commit(WriteBatch(inserts=[_row("b", idempotency_key="same", owner="alice")]))
    assert store.get("b") is None  # the failed batch left nothing behind
    store.commit(WriteBatch(inserts=[_row("c", idempotency_key="same", owner="bob"),
                                     _row("d", idempotency_key="same")]))
    assert store.find_idempotent("bob", ["same"])["same"].id == "c"
    assert store.find_idempotent("", ["same"])["same"].id == "d"


def test_cached_results_are_found_per_owner_newest_first_and_completed_only(
        store: SqlTaskStore) -> None:
    # Given tasks under one cache key: alice's two COMPLETED, a FAILED one, bob's, no owner's
    done = {"status": "COMPLETED", "cache_key": "k" * 64, "result": '{"v": 1}'}
    store.commit(WriteBatch(inserts=[
        _row("a1", owner="alice", finished_at=10.0, **done),
        _row("a2", owner="alice", finished_at=20.0, **done),
        _row("a3", owner="alice", **{**done, "status": "FAILED", "finished_at": 30.0}),
        _row("b1", owner="bob", finished_at=40.0, **done),
        _row("n1", finished_at=5.0, **done),
        _row("x1", owner="alice", finished_at=50.0, **{**done, "cache_key": "x" * 64})]))
    # Then each owner finds their own COMPLETED ones, newest first; no owner finds its own
    assert [t.id for t in store.cached("k" * 64, "alice")] == ["a2", "a1"]
    assert [t.id for t in store.cached("k" * 64, "bob")] == ["b1"]
    assert [t.id for t in store.cached("k" * 64, None)] == ["n1"]
    assert store.cached("k" * 64, "carol") == []
    # and, only where the operator lets owners share, anyone's
    assert [t.id for t in store.cached("k" * 64, "carol", any_owner=True)] == \
        ["b1", "a2", "a1"]


def test_fenced_update_applies_only_with_the_current_token(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("a", status="RUNNING", lease_token=2)]))
    store.commit(WriteBatch(inserts=[_row("b")]))
    # Given a batch whose fenced update carries a stale token
    with pytest.raises(StaleWriteError) as info:
        store.commit(WriteBatch(
            updates=[RowUpdate("b", {"name": "renamed"}),
                     RowUpdate("a", {"status": "COMPLETED", "result": "1"}, token=1)],
            events=[{"task_id": "a", "kind": "status", "payload": "{}", "created_at": 1.0}],
            logs=[_line("a", 1, "from the superseded attempt")]))
    # Then nothing of the batch is applied, and the error names the stale row
    assert info.value.task_ids == ["a"]
    assert store.get("a").status is TaskStatus.RUNNING  # type: ignore[union-attr]
    assert store.logs.read("a") == []  # its lines went with its fenced update
    assert store.get("b").name == "task b" and store.max_event_id() == 0  # type: ignore[union-attr]
    with pytest.raises(StaleWriteError):  # a status guard, and a row that is gone
        store.commit(WriteBatch(updates=[RowUpdate("b", {"queued": False}, status="RUNNING")]))
    with pytest.raises(StaleWriteError):
        store.commit(WriteBatch(updates=[RowUpdate("gone", {"queued": False})]))
    store.commit(WriteBatch(updates=[RowUpdate("a", {"status": "COMPLETED", "result": "2"},
                                               token=2, status="RUNNING")],
                            logs=[_line("a", 2, "from the accepted attempt")]))
    task = store.get("a")
    assert task is not None and task.status is TaskStatus.COMPLETED and task.result == 2
    assert [r["line"] for r in store.logs.read("a")] == ["from the accepted attempt"]


def _line(task_id: str, token: int, line: str) -> dict[str, Any]:
    return {"task_id": task_id, "token": token, "attempt": 0, "at": 1.0, "stream": "stdout",
            "line": line}


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
    items, total, _ = store.query(TaskQuery(limit=7))
    assert total == 30 and [t.id for t in items] == [f"t{i:02d}" for i in range(29, 22, -1)]
    items, total, _ = store.query(TaskQuery(offset=28, limit=7, order_by="created_at"))
    assert [t.id for t in items] == ["t28", "t29"] and total == 30
    items, total, _ = store.query(TaskQuery(status=[TaskStatus.COMPLETED],
                                         task_type=["backtest"]))
    assert {t.id for t in items} == {f"t{i:02d}" for i in range(30) if i % 6 == 5}
    items, _, _ = store.query(TaskQuery(owner="alice", priority=[TaskPriority.HIGH]))
    assert {t.id for t in items} == {"t00", "t03", "t06", "t09"}
    items, _, _ = store.query(TaskQuery(tags=["x"]))  # exact tag, not a prefix ("x_")
    assert {t.id for t in items} == {f"t{i:02d}" for i in range(0, 30, 5)}
    items, _, _ = store.query(TaskQuery(text="sweep"))
    assert {t.id for t in items} == {f"t{i:02d}" for i in range(0, 30, 4)}
    items, _, _ = store.query(TaskQuery(
        created_after=datetime.fromtimestamp(base + 10, tz=UTC),
        created_before=datetime.fromtimestamp(base + 12, tz=UTC)))
    assert {t.id for t in items} == {"t10", "t11"}
    items, _, _ = store.query(TaskQuery(order_by="priority", limit=3))
    assert all(t.priority is TaskPriority.HIGH for t in items)
    # keyset pages walk every row once, in order, whatever the sort
    for order in ("-created_at", "priority", "-finished_at", "name"):
        seen, after = [], None
        while True:
            page = store.query(TaskQuery(limit=4, order_by=order, after=after), count=False)
            seen += [t.id for t in page.items]
            if page.next_after is None:
                break
            after = page.next_after
        everything = [t.id for t in store.query(TaskQuery(limit=100, order_by=order)).items]
        assert seen == everything and len(set(seen)) == 30, order
    assert store.query(TaskQuery(limit=1)).total == 30
    # a forged cursor (a name where a time is sorted, true, an oversized id) never reaches SQL
    import base64 as b64

    for forged in (["job 3", "t01"], [True, "t01"], [1.0, "x" * 100], [1.0], "junk"):
        token = b64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        with pytest.raises(InvalidParametersError, match="after"):
            store.query(TaskQuery(after=token))


def test_active_status_counts_and_delete(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("p"), _row("r", status="RUNNING"),
                                     _row("c", status="COMPLETED")]))
    assert {t.id for t in store.active_rows()} == {"p", "r"}
    assert store.states(["p", "c", "x"]) == {"p": (TaskStatus.PENDING, None),
                                              "c": (TaskStatus.COMPLETED, None)}
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


def test_progress_is_written_only_under_the_current_lease(store: SqlTaskStore) -> None:
    store.commit(WriteBatch(inserts=[_row("a", status="RUNNING", lease_token=2),
                                     _row("done", status="COMPLETED", lease_token=1)]))

    def report(task_id: str, token: int, pct: float) -> tuple[ProgressReport, str]:
        return (ProgressReport(task_id, token, pct, updated_at=pct),
                json.dumps({"task_id": task_id, "percentage": pct}))

    store.record_progress([report("a", 2, 0.25)], now=1.0)
    # a stale attempt's progress and a finished task's progress are both dropped
    store.record_progress([report("a", 1, 0.75), report("done", 1, 0.9)], now=2.0)
    store.record_progress([report("a", 2, 0.5)], now=3.0)
    assert json.loads(store.get_progress("a")["payload"])["percentage"] == 0.5  # type: ignore[index]
    assert store.get_progress("done") is None
    events = store.events_after(0)
    assert [(e["task_id"], json.loads(e["payload"])["percentage"]) for e in events] == \
        [("a", 0.25), ("a", 0.5)]


def test_task_types_are_upserted(store: SqlTaskStore) -> None:
    store.save_task_type("spin", b"v1", 1)
    store.save_task_type("spin", b"v2", 2)
    assert store.task_types() == [("spin", b"v2", 2)]


def test_old_events_are_pruned_behind_every_cursor(store: SqlTaskStore) -> None:
    rows = [{"task_id": "a", "kind": "status", "payload": "{}", "created_at": float(t)}
            for t in range(10)]
    ids = store.append_events(rows)
    store.set_cursor("email", ids[3])  # a channel that has delivered up to the fourth
    assert store.prune_events(before=8.0) == 4  # older than 8 s and passed by the cursor
    assert [e["id"] for e in store.events_after(0)] == ids[4:]
    store.set_cursor("email", ids[-1])
    assert store.prune_events(before=100.0) == 5  # the newest is always kept
    assert store.max_event_id() == ids[-1]
    assert store.append_events(rows[:1])[0] > ids[-1]  # ids never go back


def test_the_schema_is_the_migrations_head(store: SqlTaskStore) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from raytasks.store.migrate import HEAD, current_revision, head_revision
    from raytasks.store.schema import metadata

    # HEAD is what a store at the newest schema is recognised by without Alembic
    assert current_revision(store.engine) == head_revision() == HEAD
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_a_store_written_by_the_previous_version_opens_and_works(store_url: str) -> None:
    from raytasks.store import migrate
    from tests.old_store import write_v1_store

    # Given a store as raytasks 0.1 left it: schema 1, no Alembic table, tasks and events
    write_v1_store(store_url)
    # When this version opens it
    store = open_store(store_url)
    try:
        # Then it is migrated, every old task reads back, and it works as a new one does
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        old = store.get("v1-done")
        assert old is not None and old.status is TaskStatus.COMPLETED and old.result == 42
        assert {r.id for r in store.active_rows()} == {"v1-queued"}
        queued = store.active_rows()[0]
        assert queued.enqueued_at == queued.created_at  # aging starts from the old time
        assert store.find_idempotent("alice", ["old-key"])["old-key"].id == "v1-done"
        store.commit(WriteBatch(inserts=[_row("new", idempotency_key="old-key",
                                              owner="bob")]))
        assert store.events_after(0)[0]["task_id"] == "v1-done"
        # the direct intake's table came with the upgrade: a client's commit, then the
        # manager's claim of it (once)
        store.commit(WriteBatch(inserts=[_row("direct")], intake=[
            {"task_id": "direct", "client": "c", "created_at": 1.0}]))
        assert store.intake_rows() == [("direct", 1.0)]
        assert store.claim_intake(["direct", "new"]) == ["direct"]
        assert store.claim_intake(["direct"]) == [] and store.intake_rows() == []
    finally:
        store.close()


def test_schedules_stored_before_ready_by_open_without_one(store_url: str) -> None:
    from raytasks.store import migrate
    from raytasks.store.engines import StoreEngines

    # Given a store at revision 0010 holding a schedule (no ready_by column yet)
    engines = StoreEngines(store_url, busy_timeout_s=5)
    migrate.upgrade(engines.writer, store_url, "0010")
    assert "ready_by" not in {c["name"] for c in sa.inspect(engines.writer)
                              .get_columns("rt_schedules")}
    with engines.writer.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO rt_schedules (id, owner, name, spec, paused, created_at, updated_at) "
            "VALUES ('old', 'alice', 'nightly', '{}', false, 1.0, 1.0)"))
    engines.close()
    # When this version opens it (0011 adds the column, and later revisions theirs)
    store = open_store(store_url)
    try:
        assert migrate.current_revision(store.engine) == migrate.HEAD
        # Then the old schedule reads back without ready_by, and a new one keeps its own
        (old,) = store.schedules.all()
        assert old["id"] == "old" and old["ready_by"] is None
        store.schedules.insert({"id": "new", "owner": "alice", "name": "n", "spec": "{}",
                                "paused": False, "ready_by": "09:00", "created_at": 2.0,
                                "updated_at": 2.0})
        assert [(r["id"], r["ready_by"]) for r in store.schedules.all()] == [
            ("old", None), ("new", "09:00")]
        assert store.schedules.update("old", ready_by="08:30")
        assert store.schedules.all()[0]["ready_by"] == "08:30"
    finally:
        store.close()


def test_a_newer_store_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    store.close()
    with pytest.raises(StoreError, match="newer raytasks"):
        open_store(store_url)


def test_concurrent_event_writers_never_let_a_cursor_skip_an_event(store_url: str) -> None:
    """Two writers insert events at once (the manager and the tracker): a reader that
    follows the stream by ``id > cursor`` sees every event, whatever the interleaving."""
    import random
    import threading

    # SQLite's busy handler polls with growing sleeps, so a writer can lose the lock to a
    # tight loop for a while: this test is about ids and cursors, not about starvation
    writers = [SqlTaskStore(store_url, busy_timeout_s=60), SqlTaskStore(store_url,
                                                                       busy_timeout_s=60)]
    reader = open_store(store_url)
    per_writer = 150
    for w in writers:  # widen the window between an insert and its commit
        sa.event.listen(w._writer, "commit",
                        lambda _conn: time.sleep(random.random() * 0.004))
    try:
        def write(store: SqlTaskStore, name: str) -> None:
            for i in range(per_writer):
                store.append_events([{"task_id": name, "kind": "status",
                                      "payload": json.dumps({"i": i}),
                                      "created_at": time.time()}])

        threads = [threading.Thread(target=write, args=(w, f"w{k}"))
                   for k, w in enumerate(writers)]
        for t in threads:
            t.start()
        seen: list[int] = []
        cursor = 0
        while any(t.is_alive() for t in threads) or cursor < reader.max_event_id():
            for row in reader.events_after(cursor, limit=7):
                seen.append(row["id"])
                cursor = row["id"]
        for t in threads:
            t.join()
        assert len(seen) == 2 * per_writer == len(set(seen))
    finally:
        for s in [*writers, reader]:
            s.close()


def test_many_threads_commit_at_once_without_waiting_for_a_connection(tmp_path: Any) -> None:
    store = SqlTaskStore(f"sqlite:///{tmp_path}/s.db", busy_timeout_s=10)
    threads = 24  # more than the writer pool holds (15): kept connections must not use it up
    together = threading.Barrier(threads)
    failures: list[BaseException] = []
    kept: list[int] = []

    def commits(i: int) -> None:
        try:
            for j in range(3):  # each thread commits, waits until all have, and again
                store.commit(WriteBatch(inserts=[_row(f"t{i}-{j}")]))
                together.wait(timeout=20)
            kept.append(len(store._committing._held))  # type: ignore[union-attr]
            together.wait(timeout=20)  # every thread alive while each counts
        except BaseException as exc:
            failures.append(exc)
    # When that many threads, alive together, commit three times each
    started = time.monotonic()
    pool = [threading.Thread(target=commits, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    # Then every commit landed, and none waited for the pool (its timeout is 30 s)
    assert failures == [] and time.monotonic() - started < 20
    assert store.status_counts() == {"PENDING": 3 * threads}
    # and a few threads kept their connection; those threads gone, theirs went back
    assert set(kept) == {KEPT_WRITERS}
    del pool
    gc.collect()
    assert len(store._committing._held) == 0  # type: ignore[union-attr]
    store.close()


def test_sqlite_commits_leave_the_checkpoint_to_the_managers_timer(tmp_path: Any) -> None:
    store = SqlTaskStore(f"sqlite:///{tmp_path}/wal.db")
    # Given commits that write far more than SQLite's default auto-checkpoint (1,000 pages)
    for i in range(100):
        store.commit(WriteBatch(inserts=[_row(f"t{i}-{k}", parameters=json.dumps(
            {"pad": "x" * 4000})) for k in range(10)]))
    # Then no commit checkpointed (that would have started the log over at 1,000 pages)
    assert (tmp_path / "wal.db-wal").stat().st_size > 2000 * 4096
    # And the timer's checkpoint copies every frame into the database
    frames, done = store.checkpoint_wal()
    assert done == frames > 2000
    assert len(store.get_many([f"t{i}-0" for i in range(100)])) == 100
    store.close()


@pytest.mark.parametrize(("held_by", "hold_s", "busy_timeout_s"), [
    # another process migrating the new file: its write lock, already in WAL mode
    (["PRAGMA journal_mode=WAL", "BEGIN IMMEDIATE"], 1.5, 0.3),
    # another opener reading it, not yet in WAL mode (two openers switching it at once
    # lock each other out: CI's tracker failed "database is locked" beside the manager)
    (["BEGIN", "SELECT * FROM sqlite_master"], 1.0, 0.2),
], ids=["anothers-migration", "another-opener-reading"])
def test_opening_a_new_sqlite_store_waits_for_another_process(
        tmp_path: Any, held_by: list[str], hold_s: float, busy_timeout_s: float) -> None:
    import sqlite3
    import threading
    from contextlib import closing

    # Given another process holding a lock on the new file for longer than the opener's
    # everyday busy timeout
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for statement in held_by:
        other.execute(statement).fetchall()
    release = threading.Timer(hold_s, lambda: other.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    # When the store is opened meanwhile
    store = SqlTaskStore(f"sqlite:///{path}", busy_timeout_s=busy_timeout_s)
    # Then it waited for the lock, migrated, and works (not "database is locked")
    assert time.monotonic() - started >= hold_s - 0.2
    store.commit(WriteBatch(inserts=[_row("a")]))
    assert store.get("a") is not None
    with closing(sqlite3.connect(path)) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    release.join()
    store.close()
    other.close()


def test_id_lists_of_every_length_read_claim_and_delete_each_row_once(
        store: SqlTaskStore) -> None:
    """An ``IN (...)`` list is padded to a power of two with its last id repeated: each
    length in 1..600 still reads, claims and deletes exactly its own rows, once."""
    ids = [f"t{i}" for i in range(600)]
    store.commit(WriteBatch(inserts=[_row(i) for i in ids], intake=[
        {"task_id": i, "client": "c", "created_at": 1.0} for i in ids]))
    for n in (1, 2, 3, 5, 127, 128, 129, 511, 512, 513, 600):
        assert sorted(store.get_many(ids[:n])) == sorted(ids[:n])
        assert sorted(store.states(ids[:n])) == sorted(ids[:n])
    claimed: list[str] = []
    for start, n in ((0, 1), (1, 3), (4, 129), (133, 467)):
        got = store.claim_intake(ids[start:start + n])
        assert sorted(got) == sorted(ids[start:start + n])  # no id returned twice
        claimed += got
    assert sorted(claimed) == sorted(ids) and store.intake_rows() == []
    store.commit(WriteBatch(deletes=ids[:77]))
    assert sorted(store.get_many(ids)) == sorted(ids[77:])


def test_lists_of_every_length_keep_sqlites_statement_memory_bounded(tmp_path: Any) -> None:
    """Each connection keeps the statements it prepared, by text: an ``IN (...)`` of each
    new length was one more (a long-running manager's memory grew for hours). Padded,
    500 lengths take 10 texts, and SQLite's memory stays where the first reads left it."""
    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        ids = [f"t{i}" for i in range(512)]
        store.commit(WriteBatch(inserts=[_row(i) for i in ids]))
        for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):  # every text, once
            store.get_many(ids[:n])
        before = lib.sqlite3_memory_used()
        for n in range(1, 513):
            assert len(store.get_many(ids[:n])) == n
        grown = lib.sqlite3_memory_used() - before
        assert grown < 1_000_000, f"SQLite's memory grew {grown / 1e6:.1f} MB"
    finally:
        store.close()


def test_a_lineage_environment_is_stored_once_and_every_read_puts_it_back(
        store_url: str) -> None:
    """A row keeps its task's own part of the lineage and its environment's digest; the
    environment is stored once, whoever commits it (the manager, a lent run's executor:
    two stores here), and every read of a task gives the lineage whole."""
    from raytasks.lineage import environment

    digest, text = environment("0.1.0", "c" * 64)
    own = {"environment": digest, "parameters": {"x": 1}, "seeds": {}, "bars": {},
           "models": {}}
    whole = {**json.loads(text), **own}
    first, second = open_store(store_url), open_store(store_url)
    try:
        first.commit(WriteBatch(inserts=[_row("t1", lineage=json.dumps(own),
                                              idempotency_key="k1", status="COMPLETED",
                                              cache_key="ck", finished_at=1.0)],
                                environments={digest: text}))
        second.commit(WriteBatch(inserts=[_row("t2", lineage=json.dumps(own))],
                                 environments={digest: text}))  # stored already: kept
        first.commit(WriteBatch(inserts=[_row("t3", lineage=json.dumps(own))],
                                environments={digest: text}))  # known: not written again
        with first.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM rt_environments")).scalar() == 1
            stored = conn.execute(sa.text("SELECT lineage FROM rt_tasks WHERE id = 't1'")
                                  ).scalar()
        assert json.loads(stored) == own and "libraries" not in stored
        for store in (first, second):
            t1 = store.get("t1")
            assert t1 is not None and t1.lineage == whole
            assert all(t.lineage == whole for t in store.get_many(["t1", "t2", "t3"]).values())
            assert store.find_idempotent("", ["k1"])["k1"].lineage == whole
            assert [t.lineage for t in store.cached("ck", None)] == [whole]
        # a lineage stored whole (before environments were kept apart) reads as it was
        before = {k: v for k, v in whole.items() if k != "environment"}
        first.commit(WriteBatch(inserts=[_row("old", lineage=json.dumps(before))]))
        old = second.get("old")
        assert old is not None and old.lineage == before
    finally:
        first.close()
        second.close()


def test_a_store_at_revision_0012_keeps_its_whole_lineages_and_takes_environments(
        store_url: str) -> None:
    from raytasks.lineage import environment
    from raytasks.store import migrate
    from raytasks.store.engines import StoreEngines
    from raytasks.store.schema import tasks

    # Given a store at revision 0012 holding a finished task with its lineage whole
    engines = StoreEngines(store_url, busy_timeout_s=5)
    migrate.upgrade(engines.writer, store_url, "0012")
    assert "rt_environments" not in sa.inspect(engines.writer).get_table_names()
    before = {"raytasks": "0.1.0", "code": "c" * 64, "libraries": {"numpy": "2.0"},
              "parameters": {"x": 1}, "seeds": {}, "bars": {}, "models": {}}
    with engines.writer.begin() as conn:
        conn.execute(tasks.insert(), [_row("old", status="COMPLETED", finished_at=1.0,
                                           tags="", lineage=json.dumps(before))])
    engines.close()
    # When this version opens it
    store = open_store(store_url)
    try:
        # Then it is at 0013, the old lineage reads back as it was, and a new completion
        # stores its environment apart
        assert migrate.current_revision(store.engine) == migrate.HEAD == "0013"
        old = store.get("old")
        assert old is not None and old.lineage == before
        digest, text = environment("0.2.0", "d" * 64)
        store.commit(WriteBatch(inserts=[_row("new", lineage=json.dumps(
            {"environment": digest, "parameters": {}}))], environments={digest: text}))
        new = store.get("new")
        assert new is not None and new.lineage is not None
        assert new.lineage["code"] == "d" * 64 and new.lineage["raytasks"] == "0.2.0"
    finally:
        store.close()
