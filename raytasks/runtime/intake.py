"""The intake route: a client commits its own plain submits, then tells the manager.

A submit call qualifies when every task in it has no dependencies, no idempotency key and
no owner (their checks need the manager's memory), is of a type whose parameter model
this client ran at the manager's version, and goes to a queue where the manager granted
this client room. Its task rows, their PENDING events and their intake rows are one
transaction in the store; the answer follows that commit (durable before it is
acknowledged), with no call to the manager on the way, as River and Oban clients insert
jobs. Anything else, or a store this process cannot open, takes the manager's route.

A thread then tells the manager what was written (``adopt``): one notice in flight at a
time, what is written meanwhile going in the next, so a busy client's notices go
together. A notice only hastens things: the manager adopts every task it meets by
claiming its intake row, wherever it meets it (:mod:`raytasks.manager.adoption`), and
its sweep adopts what no notice brought.
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
from .calls import Call, ManagerCalls

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
#: Seconds a notice that is not urgent (a lent run's end) waits for others: a client
#: running lone tasks one after another tells the manager once per few of them, so the
#: manager's CPU, which shares the machine with the runs, stays off their way. Only the
#: manager's counters and other clients' waits learn of such an end that much later.
NOTICE_LINGER_S = 0.1


@dataclass
class Rows:
    """What a client commits for some calls, and their answers."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    intake: list[dict[str, Any]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)

    def extend(self, other: Rows) -> None:
        self.tasks += other.tasks
        self.events += other.events
        self.intake += other.intake

    def queues(self) -> Counter[str]:
        return Counter(r["queue"] for r in self.tasks)


class IntakeRoute:
    """One client's grant of queue room, its store connection and its notice thread."""

    def __init__(self, manager: ManagerCalls, busy_timeout_s: float) -> None:
        self.client = uuid.uuid4().hex
        self._manager = manager
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self.grant: IntakeGrant | None = None
        self.store: SqlTaskStore | None = None
        self._off = False
        self._credits: Counter[str] = Counter()
        self._taken: Counter[str] = Counter()  # credits used since this client started
        self._granted_at = 0.0  # monotonic, when the grant in use was asked for
        self._told: list[str] = []  # tasks written, not yet told
        self._told_queues: Counter[str] = Counter()  # new tasks among them, per queue
        self._urgent = False  # a notice waiting is about queued work: it goes at once
        self._linger_from = 0.0  # monotonic, when the oldest lingering notice was written
        self._in_flight: Call[None] | None = None  # the notice sent, not yet answered
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.committed = 0  # tasks this client committed itself

    def takes(self, call: list[NewTask]) -> bool:
        """Whether ``call`` is one this route may commit (before looking at the grant)."""
        return not self._off and 0 < len(call) <= MAX_CALL_TASKS and all(map(_plain, call))

    def submit(self, calls: list[list[NewTask]]) -> list[list[Ack] | BaseException | None]:
        """Commit the calls this route takes, together; per call its Acks, the error that
        refused it (as the manager would refuse it), or None: it goes to the manager."""
        out: list[list[Ack] | BaseException | None] = [None] * len(calls)
        if not self.ready():  # a grant is asked for only once a call could use it
            return out
        grant = self.grant
        assert grant is not None
        built: dict[int, Rows] = {}
        for i, call in enumerate(calls):
            if self.takes(call) and all(granted(task, grant) for task in call):
                try:
                    built[i] = rows_of(call, grant, time.time(), self.client)
                except RaytasksError as exc:
                    out[i] = exc
        batch = Rows()
        for i, rows in list(built.items()):
            if self.reserve(rows.queues()):
                batch.extend(rows)
            else:
                del built[i]  # no room granted: the manager decides
        if batch.tasks and not self.commit(batch):
            return out
        for i, rows in built.items():
            out[i] = rows.acks
        return out

    def reserve(self, need: Counter[str]) -> bool:
        """Take ``need`` of the granted room, if the grant is fresh and has it."""
        grant = self.grant
        assert grant is not None
        with self._lock:
            if time.monotonic() >= self._granted_at + USABLE_SHARE * grant.ttl_s \
                    or any(self._credits[q] < n for q, n in need.items()):
                self._wake.notify()  # renew
                return False
            self._credits -= need
            self._taken += need
        return True

    def commit(self, rows: Rows) -> bool:
        """Commit rows (their room reserved) and tell the manager; False if the commit
        failed (nothing stored: the room is given back, the calls go to the manager)."""
        assert self.store is not None
        need = rows.queues()
        try:
            self.store.commit(WriteBatch(inserts=rows.tasks, events=rows.events,
                                         intake=rows.intake))
        except BaseException as exc:
            with self._lock:
                self._credits += need
                self._taken -= need
            if not isinstance(exc, Exception):  # an interrupt: no fallback
                raise
            log.warning("intake commit failed (%s); using the manager's route", exc)
            return False
        self.committed += len(rows.intake)
        self.tell([r["task_id"] for r in rows.intake], need)
        return True

    def tell(self, task_ids: list[str], queues: Counter[str] | None = None,
             urgent: bool = True) -> None:
        """Tell the manager these tasks were written here (not blocking): urgent ones at
        once when no notice is in flight, else with the next; the others within
        :data:`NOTICE_LINGER_S`, with whatever else is told meanwhile."""
        with self._lock:
            if not self._told:
                self._linger_from = time.monotonic()
            self._told += task_ids
            self._told_queues.update(queues or {})
            self._urgent = self._urgent or urgent
            if urgent and self._in_flight is None and not self._stopping:
                self._send()  # at once, from here: no thread to wake on the way
            self._wake.notify()

    def _due(self) -> bool:
        """Whether the notice waiting should go now (lock held)."""
        return bool(self._told) and (self._urgent or self._stopping or self._off or
                                     time.monotonic() >= self._linger_from + NOTICE_LINGER_S)

    # ------------------------------------------------------------------- grant

    def ready(self) -> bool:
        """A grant and a store connection (asked for and opened on first use)."""
        if self.grant is not None:
            return True
        with self._lock:
            if self.grant is not None or self._off:
                return self.grant is not None
            try:
                asked = time.monotonic()
                grant = self._manager.grant(self.client).result(30)
                self.store = _open(grant, self._busy_timeout_s) if grant is not None \
                    else None
            except Exception as exc:
                log.info("no intake here (%s): submits go through the manager", exc)
                grant = None
            if grant is None or self.store is None:
                self._off = True
                return False
            self._credits = Counter(grant.credits)
            self._granted_at = asked
            self.grant = grant
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="raytasks-intake")
            self._thread.start()
        return True

    def _renew_due(self) -> bool:
        grant = self.grant
        assert grant is not None
        if time.monotonic() > self._granted_at + grant.ttl_s / 2:
            return True
        return any(self._credits[q] < n // 2 for q, n in grant.credits.items())

    def _renew(self, taken: Counter[str]) -> None:
        """A new grant, less what this client used since asking (its notices come later)."""
        asked = time.monotonic()
        try:
            grant = self._manager.grant(self.client).result(30)
        except Exception:
            return  # asked again on the next turn; past its life the grant is not used
        with self._lock:
            if grant is None:
                self._off = True
                return
            self._credits = Counter(grant.credits)
            self._credits.subtract(self._taken - taken)
            self.grant, self._granted_at = grant, asked

    # ------------------------------------------------------------ notice thread

    def _send(self) -> None:
        """Send what was written and not told (lock held; not blocking): the notice
        thread takes the answer."""
        ids, queues = self._told, self._told_queues
        self._told, self._told_queues, self._urgent = [], Counter(), False
        try:
            self._in_flight = self._manager.adopt(self.client, ids, dict(queues))
        except Exception as exc:  # Ray is going away: the manager's sweep adopts them
            log.info("an intake notice could not be sent: %s", exc)
        self._wake.notify()

    def _loop(self) -> None:
        """Takes each notice's answer, then sends what was written meanwhile as the next
        one, and renews the grant before it runs out."""
        while True:
            with self._lock:
                if not (self._in_flight or self._due() or self._stopping
                        or self._renew_due()):
                    self._wake.wait(self._until_due())
                if self._in_flight is None and self._due():
                    self._send()
                sent = self._in_flight
            if sent is not None:
                try:
                    sent.result(30)
                except Exception as exc:  # the manager's sweep adopts them
                    if ray.is_initialized():
                        log.info("an intake notice failed: %s", exc)
                with self._lock:
                    self._in_flight = None
                    self._wake.notify_all()
                continue
            with self._lock:
                renew = self._renew_due() and not self._stopping
                taken, stopping = self._taken.copy(), self._stopping
            if renew:
                self._renew(taken)
            if stopping:
                return

    def _until_due(self) -> float:
        if not self._told:
            return 1.0
        return max(0.0, self._linger_from + NOTICE_LINGER_S - time.monotonic())

    def close(self, timeout_s: float = 2.0) -> None:
        """Send the notice still held and stop the thread."""
        with self._lock:
            self._off = True  # later submits go to the manager
            deadline = time.monotonic() + timeout_s
            while (self._in_flight is not None or self._told) and self._thread is not None \
                    and time.monotonic() < deadline:
                self._wake.notify_all()
                self._wake.wait(0.05)
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.store is not None:
            self.store.close()


def _plain(task: NewTask) -> bool:
    """No dependencies, idempotency key, owner or cache: their checks need the manager's
    memory (a cached result, its store)."""
    return not task.depends_on and task.idempotency_key is None and task.owner is None \
        and not task.cache


def granted(task: NewTask, grant: IntakeGrant) -> bool:
    """A task of a type whose model this client ran at the manager's version, into a queue
    with room granted."""
    known = grant.types.get(task.task_type)
    return known is not None and task.queue in grant.credits \
        and (known[0] is None or task.checked_version == known[0])


def rows_of(call: list[NewTask], grant: IntakeGrant, now: float, client: str,
            lent_to: str | None = None) -> Rows:
    """The rows of one call, built as the manager builds them; ``lent_to``: leased at once
    to that executor (RUNNING under the first token), as the manager leases.

    Raises:
        InvalidParametersError, PayloadTooLargeError: as the manager would.
    """
    rows = Rows()
    for i, task in enumerate(call):
        _version, timeout_s, max_retries = grant.types[task.task_type]
        timeout_s = first_given(task.timeout_s, timeout_s)
        max_retries = first_given(task.max_retries, max_retries)
        prefix = f"requests[{i}]." if len(call) > 1 else ""
        row = task_row(task.id, task, now, task.parameters, grant.max_parameters_bytes,
                       timeout_s, max_retries, prefix, task.work_units)
        row["queued"], row["enqueued_at"] = True, now
        rows.tasks.append(row)
        rows.events.append(status_event(task_id=task.id, task_type=task.task_type, owner=None,
                                        attempt=0, priority=task.priority, previous=None,
                                        status=TaskStatus.PENDING, now=now))
        if lent_to is not None:
            row.update(status=TaskStatus.RUNNING.value, lease_token=FIRST_TOKEN,
                       started_at=now, lease_executor=lent_to)
            rows.events.append(status_event(
                task_id=task.id, task_type=task.task_type, owner=None, attempt=0,
                priority=task.priority, previous=TaskStatus.PENDING,
                status=TaskStatus.RUNNING, now=now))
        rows.intake.append({"task_id": task.id, "client": client, "created_at": now})
        rows.acks.append(Ack(task.id, now, max_retries, timeout_s))
    return rows


#: The lease token of a lent run: a new task's first lease.
FIRST_TOKEN = 1


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
