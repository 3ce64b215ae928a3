"""The store's sessions and audit tables (raytasks.store.access), on SQLite and a real
throwaway PostgreSQL: the cap evicts only the owner's oldest, sessions end by token, by
owner and by age, and the audit trail is appended to, read newest first and pruned by age.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from raytasks.store.access import AccessStore, SessionRow, cookie_digest


@pytest.fixture
def access(store_url: str) -> Iterator[AccessStore]:
    store = AccessStore(store_url)
    yield store
    store.close()


def _row(session_id: str, owner: str, at: float, token: str = "t" * 64) -> SessionRow:
    return SessionRow(id=session_id, owner=owner, token_sha256=token, source="10.0.0.1",
                      created_at=at, seen_at=at, expires_at=at + 100)


def test_an_owners_cap_evicts_only_that_owners_oldest_sessions(access: AccessStore) -> None:
    sessions = access.sessions
    # Given the admin's session, then bob signing in five times under a cap of three
    assert sessions.open(_row("admin-1", "root", 1.0), cap=3) == 0
    evicted = [sessions.open(_row(f"bob-{i}", "bob", 2.0 + i), cap=3) for i in range(5)]
    # Then each sign-in past the cap ended one of bob's, the oldest first
    assert evicted == [0, 0, 0, 1, 1]
    assert [s.id for s in sessions.of_owner("bob")] == ["bob-2", "bob-3", "bob-4"]
    # And the admin's session is untouched
    found = sessions.get("admin-1")
    assert found is not None and found.owner == "root" and found.source == "10.0.0.1"


def test_concurrent_sign_ins_of_one_owner_keep_the_cap(store_url: str) -> None:
    # Given two servers (two stores open on one database) and many sign-ins at once
    stores = [AccessStore(store_url, busy_timeout_s=30), AccessStore(store_url,
                                                                     busy_timeout_s=30)]
    try:
        def sign_in(i: int) -> None:
            stores[i % 2].sessions.open(_row(f"s-{i:03}", "bob", float(i)), cap=4)

        threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then bob holds exactly the cap
        assert len(stores[0].sessions.of_owner("bob")) == 4
    finally:
        for store in stores:
            store.close()


def test_sessions_end_one_by_one_by_owner_by_token_and_by_age(access: AccessStore) -> None:
    sessions = access.sessions
    for i, (owner, token) in enumerate([("alice", "a" * 64), ("alice", "b" * 64),
                                        ("bob", "a" * 64), ("carol", "c" * 64)]):
        sessions.open(_row(f"s{i}", owner, 10.0 + i, token), cap=10)
    assert sessions.end("s0") and not sessions.end("s0")
    assert sessions.end_tokens(["a" * 64]) == 1  # bob's (alice's s0 is gone already)
    assert sessions.end_owner("alice") == 1
    assert [s.id for s in sessions.of_owner("carol")] == ["s3"]
    # a session is kept while seen, and pruned once idle or past its lifetime
    sessions.open(_row("fresh", "dave", 50.0), cap=10)
    sessions.touch("s3", 60.0)
    assert sessions.prune(now=65.0, idle_s=10.0) == 1  # dave's, unseen since 50
    assert sessions.get("s3") is not None
    assert sessions.prune(now=200.0, idle_s=1000.0) == 1  # carol's, past expires_at
    assert sessions.get("s3") is None


def test_a_session_is_stored_by_its_cookies_digest(access: AccessStore) -> None:
    digest = cookie_digest("the-cookie")
    assert len(digest) == 64 and digest != "the-cookie"
    access.sessions.open(_row(digest, "alice", 1.0), cap=1)
    assert access.sessions.get(cookie_digest("the-cookie")) is not None
    assert access.sessions.get("the-cookie") is None


def test_the_audit_trail_is_read_newest_first_filtered_and_pruned_by_age(
        access: AccessStore) -> None:
    trail = access.audit
    trail.append([{"at": float(i), "owner": "alice" if i % 2 else "root",
                   "token_id": "abcdef0123", "source": "10.0.0.1", "request_id": f"r{i}",
                   "action": "task.create" if i < 6 else "task.read", "target": f"t{i}",
                   "target_owner": "alice", "detail": None} for i in range(10)])
    newest = trail.query(limit=3)
    assert [e["request_id"] for e in newest] == ["r9", "r8", "r7"]
    older = trail.query(limit=3, before=newest[-1]["id"])
    assert [e["request_id"] for e in older] == ["r6", "r5", "r4"]
    assert {e["owner"] for e in trail.query(owner="root")} == {"root"}
    assert [e["target"] for e in trail.query(action="task.read", owner="alice")] == ["t9", "t7"]
    assert [e["at"] for e in trail.query(since=3.0, until=5.0)] == [4.0, 3.0]
    assert trail.query(target_owner="bob") == []
    # long values are cut to their columns, never refused
    trail.append([{"at": 20.0, "owner": "x" * 500, "action": "session.open",
                   "detail": "d" * 1000, "source": "s" * 100}])
    cut = trail.query(limit=1)[0]
    assert (len(cut["owner"]), len(cut["detail"]), len(cut["source"])) == (200, 400, 64)
    # pruning by age removes only what is older than the cut-off
    assert trail.prune(before=5.0) == 5
    assert [e["at"] for e in trail.query()][-1] == 5.0
