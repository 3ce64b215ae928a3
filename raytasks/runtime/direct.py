"""The direct intake, client side: a plain submit is committed here, then the manager told.

A submit call qualifies when every task in it has no dependencies, no idempotency key and
no owner, is of a type whose parameter model this client ran at the manager's version,
and goes to a queue where the manager granted this client room. Its task rows, their
PENDING events and their intake rows are one transaction in the store; the answer follows
that commit (durable before it is acknowledged) with no call to the manager on the way.
Anything else, or a store this process cannot open, takes the manager's path.

A thread then tells the manager (``adopt``), many tasks per call, and renews the grant
before it expires. The manager adopts a task by claiming its intake row, so a task is
adopted once; a notice lost with a crashed manager or client is made up for by the
manager's sweep of the intake.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from ..errors import RaytasksError
from ..manager.intake import first_given, task_row
from ..manager.outbox import status_event
from ..messages import Ack, IntakeGrant, NewTask
from ..models import TaskStatus
from ..store.base import WriteBatch
from .actors import get

if TYPE_CHECKING:
    from ..store import SqlTaskStore

log = logging.getLogger(__name__)

#: Most tasks of one call committed here: a larger call (``submit_many``) goes through the
#: manager, whose one create costs less than this client's commit plus the manager's claim
#: and read of every row. Many small calls made at once are committed here together.
MAX_CALL_TASKS = 64
#: Seconds a client waits to reach the manager's PostgreSQL before it submits through the
#: manager instead.
CONNECT_TIMEOUT_S = 3
#: Share of a grant's life after which it is used no more (the manager holds it longer).
USABLE_SHARE = 0.8


class DirectIntake:
    """One client's grant, its store connection and its notice thread."""

    def __init__(self, manager: Any, busy_timeout_s: float) -> None:
        self.client = uuid.uuid4().hex
        self._manager = manager
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._grant: IntakeGrant | None = None
        self._store: SqlTaskStore | None = None
        self._off = False
        self._credits: Counter[str] = Counter()
        self._taken: Counter[str] = Counter()  # credits used since this client started
        self._granted_at = 0.0  # monotonic, when the grant in use was asked for
        # per wait session: the ids committed and not yet told, and their count per queue
        self._notices: dict[str | None, tuple[list[str], Counter[str]]] = {}
        self._in_flight: list[Any] | None = None  # the notices sent, not yet answered
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.committed = 0  # tasks this client committed itself

    # ------------------------------------------------------------------ submit

    def submit(self, calls: list[list[NewTask]],
               session: str | None) -> list[list[Ack] | BaseException | None]:
        """Commit the plain calls here, together; per call its Acks, the error that
        refused it (as the manager would refuse it), or None: it goes to the manager."""
        out: list[list[Ack] | BaseException | None] = [None] * len(calls)
        if self._off or not any(_small(call) and all(map(_plain_request, call))
                                for call in calls) \
                or not self._ready():  # a grant is asked for only once a call could use it
            return out
        grant, store = self._grant, self._store
        assert grant is not None and store is not None
        now = time.time()
        built: dict[int, _Rows] = {}
        for i, call in enumerate(calls):
            if _small(call) and all(_plain(task, grant) for task in call):
                try:
                    built[i] = _rows(call, grant, now, self.client)
                except RaytasksError as exc:
                    out[i] = exc
        need: Counter[str] = Counter()
        with self._lock:
            if time.monotonic() >= self._granted_at + USABLE_SHARE * grant.ttl_s:
                self._wake.notify()  # renew
                return out
            for i, rows in list(built.items()):
                queues = Counter(r["queue"] for r in rows.tasks)
                if any(self._credits[q] < need[q] + n for q, n in queues.items()):
                    del built[i]  # no room granted: the manager decides
                    self._wake.notify()
                else:
                    need += queues
            self._credits -= need
            self._taken += need
        if not built:
            return out
        batch = _Rows()
        for rows in built.values():
            batch.extend(rows)
        try:
            store.commit(WriteBatch(inserts=batch.tasks, events=batch.events,
                                    intake=batch.intake))
        except Exception as exc:  # nothing was stored: the manager's path
            with self._lock:
                self._credits += need
                self._taken -= need
            log.warning("direct intake commit failed (%s); using the manager's path", exc)
            return out
        with self._lock:
            ids, queues = self._notices.setdefault(session, ([], Counter()))
            ids += [r["task_id"] for r in batch.intake]
            queues.update(r["queue"] for r in batch.tasks)
            self.committed += len(batch.intake)
            if self._in_flight is None and not self._stopping:
                self._send()  # at once, from here: no thread to wake on the way
            self._wake.notify()
        for i, rows in built.items():
            out[i] = rows.acks
        return out

    # ------------------------------------------------------------------- grant

    def _ready(self) -> bool:
        """A grant and a store connection (asked for and opened on first use)."""
        if self._grant is not None:
            return True
        with self._lock:
            if self._grant is not None or self._off:
                return self._grant is not None
            try:
                asked = time.monotonic()
                grant: IntakeGrant | None = get(self._manager.grant.remote(self.client), 30)
                self._store = _open(grant, self._busy_timeout_s) if grant is not None \
                    else None
            except Exception as exc:
                log.info("no direct intake (%s): submits go through the manager", exc)
                grant = None
            if grant is None or self._store is None:
                self._off = True
                return False
            self._credits = Counter(grant.credits)
            self._granted_at = asked
            self._grant = grant
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="raytasks-intake")
            self._thread.start()
        return True

    def _renew_due(self) -> bool:
        grant = self._grant
        assert grant is not None
        if time.monotonic() > self._granted_at + grant.ttl_s / 2:
            return True
        return any(self._credits[q] < n // 2 for q, n in grant.credits.items())

    # ------------------------------------------------------------ notice thread

    def _loop(self) -> None:
        """Waits for each notice in flight, then sends what was committed meanwhile as
        the next one (one in flight at a time: a busy client's notices go together), and
        renews the grant."""
        while True:
            with self._lock:
                if not (self._in_flight or self._notices or self._stopping
                        or self._renew_due()):
                    self._wake.wait(1.0)
                if self._in_flight is None and self._notices:
                    self._send()
                sent = self._in_flight
            if sent:
                for ref in sent:
                    try:
                        get(ref, 30)
                    except Exception as exc:  # the manager's sweep adopts them
                        if ray.is_initialized():
                            log.info("an intake notice failed: %s", exc)
                with self._lock:
                    self._in_flight = None  # what was committed meanwhile goes next turn
                continue
            with self._lock:
                renew = self._renew_due() and not self._stopping
                taken, stopping = self._taken.copy(), self._stopping
            if renew:
                self._renew(taken)
            if stopping:
                return

    def _send(self) -> None:
        """Tell the manager what was committed (call with the lock held; not blocking)."""
        notices, self._notices = self._notices, {}
        try:
            self._in_flight = [self._manager.adopt.remote(self.client, ids, session,
                                                          dict(queues))
                               for session, (ids, queues) in notices.items()]
        except Exception as exc:  # Ray is going away: the manager's sweep adopts them
            log.info("an intake notice could not be sent: %s", exc)

    def _renew(self, taken: Counter[str]) -> None:
        """A new grant, less what this client used since asking (its notices come later)."""
        asked = time.monotonic()
        try:
            grant: IntakeGrant | None = get(self._manager.grant.remote(self.client), 30)
        except Exception:
            return  # asked again on the next turn; past its life the grant is not used
        with self._lock:
            if grant is None:
                self._off = True
                return
            since = self._taken - taken
            self._credits = Counter(grant.credits)
            self._credits.subtract(since)
            self._grant, self._granted_at = grant, asked

    def close(self, timeout_s: float = 2.0) -> None:
        """Send the notices still held, and stop the thread."""
        with self._lock:
            self._off = self._stopping = True  # later submits go to the manager
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._store is not None:
            self._store.close()


@dataclass
class _Rows:
    """What the direct intake commits for some calls, and their answers."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    intake: list[dict[str, Any]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)

    def extend(self, other: _Rows) -> None:
        self.tasks += other.tasks
        self.events += other.events
        self.intake += other.intake


def _small(call: list[NewTask]) -> bool:
    return 0 < len(call) <= MAX_CALL_TASKS


def _plain_request(task: NewTask) -> bool:
    """No dependencies, idempotency key or owner: their checks need the manager's memory."""
    return not task.depends_on and task.idempotency_key is None and task.owner is None


def _plain(task: NewTask, grant: IntakeGrant) -> bool:
    """A task the direct intake takes: a plain request of a type whose model this client
    ran at the manager's version, into a queue with room granted."""
    known = grant.types.get(task.task_type)
    return _plain_request(task) and known is not None and task.queue in grant.credits \
        and (known[0] is None or task.checked_version == known[0])


def _rows(call: list[NewTask], grant: IntakeGrant, now: float, client: str) -> _Rows:
    """The rows of one call, built as the manager builds them.

    Raises:
        InvalidParametersError, PayloadTooLargeError: as the manager would.
    """
    rows = _Rows()
    for i, task in enumerate(call):
        _version, timeout_s, max_retries = grant.types[task.task_type]
        timeout_s = first_given(task.timeout_s, timeout_s)
        max_retries = first_given(task.max_retries, max_retries)
        prefix = f"requests[{i}]." if len(call) > 1 else ""
        row = task_row(task.id, task, now, task.parameters, grant.max_parameters_bytes,
                       timeout_s, max_retries, prefix)
        row["queued"], row["enqueued_at"] = True, now
        rows.tasks.append(row)
        rows.events.append(status_event(task_id=task.id, task_type=task.task_type, owner=None,
                                        attempt=0, priority=task.priority, previous=None,
                                        status=TaskStatus.PENDING, now=now))
        rows.intake.append({"task_id": task.id, "client": client, "created_at": now})
        rows.acks.append(Ack(task.id, now, max_retries, timeout_s))
    return rows


def _open(grant: IntakeGrant, busy_timeout_s: float) -> SqlTaskStore | None:
    """The manager's store, if this process reaches the same one: a SQLite file only on
    the manager's node (never through Ray Client) and only where it exists."""
    from ..store import SqlTaskStore

    url = grant.store_url
    if url.startswith("sqlite"):
        if ray.util.client.ray.is_connected() \
                or ray.get_runtime_context().get_node_id() != grant.node_id:
            return None
        if not Path(url.split("///", 1)[-1]).is_file():
            return None
    elif "connect_timeout" not in url:  # a server out of reach fails fast, not in minutes
        url += ("&" if "?" in url else "?") + f"connect_timeout={CONNECT_TIMEOUT_S}"
    return SqlTaskStore(url, busy_timeout_s=busy_timeout_s)
