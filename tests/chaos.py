"""Chaos: real work under random kills, restarts during restarts and paused executors.

``run()`` starts raytasks on the Ray this process joined, submits a mix of work
(plain tasks, failures that retry, large results written as artifacts,
dependency chains, cancels) and, while it runs, kills every kind of system
actor and executor at random, kills the manager again while it reconciles, and
pauses an executor with SIGSTOP past its lease TTL before resuming it; HIGH tasks due
within seconds preempt MEDIUM runs of seconds meanwhile (kills land on preemptions too).
Then it
checks the store and the event stream and returns a report with every
violation it found (an empty list is a pass).

``python -m tests.chaos --tasks 2000 --kills 45`` is the long soak (``make soak``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel

import raytasks
from raytasks import (
    Settings,
    TaskCreateRequest,
    TaskExecutionContext,
    TaskManager,
    TaskNotificationService,
    TaskStatus,
    register_task_type,
)
from raytasks.settings import TaskTypeSettings
from raytasks.store import open_store

LEASE_TTL_S = 2.0
#: Seconds within which a wait on a finished task must return, after a manager kill too
#: (the restart itself takes a few).
WAIT_AFTER_KILL_S = 20.0


class WorkParams(BaseModel):
    seconds: float = 0.05
    fail_attempts: int = 0
    blob: int = 0
    kind: str | None = None  # "long" runs and "urgent" ones: estimated apart


def work(params: WorkParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """Sleeps in steps with progress, saving its step as a checkpoint and resuming from it
    (preempted, it stops at the next step); fails its first attempts; may return a large
    result."""
    run_id = uuid.uuid4().hex
    (ctx.artifact_dir / "run").write_text(run_id)
    if ctx.attempt < params.fail_attempts:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    steps = max(1, int(params.seconds / 0.02))
    first = int((ctx.checkpoint or {}).get("step", 0)) if params.kind == "long" else 0
    for i in range(first, steps):
        ctx.check_cancelled()
        time.sleep(params.seconds / steps)
        ctx.report_progress((i + 1) / steps, f"step {i + 1}")
        if params.kind == "long" and i % 10 == 9:
            ctx.save_checkpoint({"step": i + 1})
    (ctx.artifact_dir / "done").write_text(run_id)
    return {"attempt": ctx.attempt, "run": run_id, "blob": "x" * params.blob}


class Chaos:
    """The disruptions, each a method, chosen at random by a background thread."""

    def __init__(self, runtime: Any, rng: random.Random) -> None:
        self.runtime = runtime
        self.namespace = runtime.settings.namespace
        self.rng = rng
        self.done: Counter[str] = Counter()
        self.stop = threading.Event()

    def _actor(self, name: str) -> Any:
        return ray.get_actor(name, namespace=self.namespace)

    def kill(self, name: str) -> None:
        try:
            ray.kill(self._actor(name), no_restart=False)
        except ValueError:
            return

    def manager(self) -> None:
        self.kill("manager")

    def manager_twice(self) -> None:
        """Kill the manager, then again while it reconciles."""
        self.kill("manager")
        time.sleep(self.rng.uniform(0.2, 1.0))
        self.kill("manager")

    def tracker(self) -> None:
        self.kill("progress-tracker")

    def notifier(self) -> None:
        self.kill("notifier")

    def engine(self) -> None:
        self.kill("engine")

    def executor(self) -> None:
        self.kill(f"executor:chaos:{self.rng.randrange(2)}")

    def trainer(self) -> None:
        """Kill the executor of the type whose runs are preempted (mid-preemption, at times)."""
        self.kill("executor:chaos_train:0")

    def everything(self) -> None:
        for name in ("manager", "progress-tracker", "notifier", "engine",
                     "executor:chaos:0", "executor:chaos:1", "executor:chaos_train:0"):
            self.kill(name)

    def pause(self) -> None:
        """SIGSTOP an executor past its lease TTL, then SIGCONT it."""
        try:
            state = ray.get(self._actor(f"executor:chaos:{self.rng.randrange(2)}")
                            .state.remote(), timeout=10)
        except Exception:
            return
        pid = state["pid"]
        for _ in range(40):  # pause it in the middle of a task, when there is one
            if state.get("current"):
                break
            time.sleep(0.05)
            state = ray.get(self._actor(state["executor_id"]).state.remote(), timeout=10)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(LEASE_TTL_S * self.rng.uniform(1.5, 2.5))
        finally:
            os.kill(pid, signal.SIGCONT)

    def loop(self, kills: int, duration_s: float) -> None:
        moves = [self.manager, self.manager_twice, self.tracker, self.notifier, self.engine,
                 self.executor, self.executor, self.everything, self.pause, self.pause,
                 self.trainer]
        gap = duration_s / max(1, kills)
        for k in range(kills):
            if self.stop.wait(self.rng.uniform(0.3, 1.7) * gap):
                return
            move = moves[k % len(moves)] if k < len(moves) else self.rng.choice(moves)
            move()
            self.done[move.__name__] += 1


#: How soon an urgent HIGH task is due after its submit (MEDIUM "long" runs take 3 s).
URGENT_S = 1.5


def _requests(count: int, rng: random.Random) -> list[list[TaskCreateRequest]]:
    """Batches of work: independent tasks, chains of three (each a batch of its own),
    MEDIUM runs of seconds and urgent HIGH tasks (due ``URGENT_S`` after their submit)."""
    batches: list[list[TaskCreateRequest]] = []
    made = 0
    while made < count:
        if rng.random() < 0.12:
            long_run = rng.random() < 0.6
            batches.append([TaskCreateRequest(
                name="long" if long_run else "urgent", task_type="chaos",
                parameters={"seconds": 3.0 if long_run else 0.1,
                            "kind": "long" if long_run else "urgent"},
                priority=2 if long_run else 1, max_retries=6)])
            made += 1
            continue
        if rng.random() < 0.15:
            batches.append([TaskCreateRequest(name="chain", task_type="chaos",
                                              parameters={"seconds": 0.05}, max_retries=6)
                            for _ in range(3)])
            made += 3
            continue
        p: dict[str, Any] = {"seconds": rng.choice([0.02, 0.05, 0.2, 0.6])}
        if rng.random() < 0.2:
            p["fail_attempts"] = 1
        if rng.random() < 0.1:
            p["blob"] = 100_000  # over inline_result_max_bytes: an artifact file
        batches.append([TaskCreateRequest(name="work", task_type="chaos", parameters=p,
                                          priority=rng.choice([1, 2, 3]), max_retries=6)])
        made += 1
    return batches


def storms(tm: TaskManager, out: list[str], count: int) -> None:
    """Preemptions under the kills: on ``chaos_train`` (one executor), a MEDIUM run of
    seconds is followed, once it runs, by an urgent HIGH task due ``URGENT_S`` later, which
    only a preemption meets; a first run teaches the manager how long the runs take."""
    def submit(kind: str, priority: int, deadline: datetime | None = None) -> str:
        task_id = _submit(tm, TaskCreateRequest(
            name=f"storm-{kind}", task_type="chaos_train", priority=priority, max_retries=6,
            deadline=deadline, parameters={"seconds": 3.0 if kind == "long" else 0.1,
                                           "kind": kind}))
        out.append(task_id)
        return task_id

    _call(lambda: tm.wait_sync(submit("long", 2), timeout_s=120))
    for _ in range(count):
        run_id = submit("long", 2)
        deadline = time.monotonic() + 60
        while _call(lambda r=run_id: tm.get_task_sync(r)).status is not TaskStatus.RUNNING:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        urgent = submit("urgent", 1, datetime.fromtimestamp(time.time() + URGENT_S, tz=UTC))
        _call(lambda u=urgent: tm.wait_sync(u, timeout_s=120))


def run(store_url: str, data_dir: str, *, tasks: int = 300, kills: int = 12,
        seed: int = 1, duration_s: float = 40.0, store_outages: int = 0,
        postgres: Any = None) -> dict[str, Any]:
    rng = random.Random(seed)
    settings = Settings(namespace=f"chaos-{uuid.uuid4().hex[:8]}", data_dir=data_dir,
                        store_url=store_url, lease_ttl_s=LEASE_TTL_S,
                        heartbeat_interval_s=0.3, retry_backoff_base_s=0.1,
                        retry_backoff_max_s=1.0, cancel_grace_s=1.0, workers_per_type=0,
                        progress_flush_interval_s=0.2,
                        task_types={"chaos": TaskTypeSettings(workers=2),
                                    "chaos_train": TaskTypeSettings(workers=1)})
    runtime = raytasks.connect(settings=settings)
    for name in ("chaos", "chaos_train"):
        register_task_type(name, work, params_model=WorkParams, preemptible=True,
                           preempt_grace_s=1.0, runtime=runtime)
    tm = TaskManager(runtime)
    seen: list[Any] = []
    subscription = TaskNotificationService(runtime).subscribe(seen.append, after_id=0)
    chaos = Chaos(runtime, rng)
    killer = threading.Thread(target=chaos.loop, args=(kills, duration_s), daemon=True)
    started = time.monotonic()
    killer.start()
    outages = None
    if store_outages:  # the store stopped (PostgreSQL) or locked (SQLite) meanwhile
        from tests.storefaults import outages_of

        outages = outages_of(store_url, postgres, store_outages, duration_s)
        outage_thread = threading.Thread(target=outages.loop, daemon=True)
        outage_thread.start()
    stormed: list[str] = []
    storm = threading.Thread(target=storms, args=(TaskManager(runtime), stormed, 3),
                             daemon=True)
    storm.start()
    ids: list[str] = []
    chains: list[list[str]] = []
    cancels: set[str] = set()
    for batch in _requests(tasks, rng):
        if batch[0].name == "chain":
            a = _submit(tm, batch[0])
            b = _submit(tm, batch[1].model_copy(update={"depends_on": [a]}))
            c = _submit(tm, batch[2].model_copy(update={"depends_on": [b]}))
            chains.append([a, b, c])
            ids += [a, b, c]
        elif batch[0].name == "urgent":
            due = datetime.fromtimestamp(time.time() + URGENT_S, tz=UTC)
            ids.append(_submit(tm, batch[0].model_copy(update={"deadline": due})))
        else:
            ids.append(_submit(tm, batch[0]))
        if rng.random() < 0.05:
            victim = rng.choice(ids)
            if _call(lambda v=victim: tm.cancel_task_sync(v), allow_errors=True):
                cancels.add(victim)
        time.sleep(rng.uniform(0, 2 * duration_s / max(1, tasks)) * 0.6)
    killer.join()
    storm.join()
    if outages is not None:
        outage_thread.join()
    ids += stormed
    done = _call(lambda: tm.wait_all_sync(ids, timeout_s=240))
    elapsed = time.monotonic() - started
    late_waits = waits_after_a_kill(chaos, tm, ids, rng)
    # the subscription catches up with the end of the stream
    store = open_store(store_url)
    last = store.max_event_id()
    deadline = time.monotonic() + 60
    while (not seen or seen[-1].event_id < last) and time.monotonic() < deadline:
        time.sleep(0.2)
    subscription.close()
    assert settings.artifact_root is not None
    report = check(store, done, chains, [e.event_id for e in seen], settings.artifact_root)
    report["problems"] += late_waits
    with store.engine.connect() as conn:
        report["preempted_attempts"] = conn.exec_driver_sql(
            "SELECT count(*) FROM rt_attempts WHERE outcome = 'preempted'").scalar()
    store.close()
    report.update(tasks=len(ids), seconds=round(elapsed, 1), kills=dict(chaos.done),
                  cancelled_by_client=len(cancels), store=store_url.split(":")[0],
                  committed_by_the_client=_count(runtime.session.intake, "committed"),
                  sent_to_lent_executors=_count(runtime.session.loans, "started"),
                  completed_by_the_client=_count(runtime.session.loans, "ran"))
    if outages is not None:
        report.update(store_outages=outages.figures(done),
                      refused_for_the_store=dict(STORE_REFUSALS))
    runtime.shutdown()
    return report


def waits_after_a_kill(chaos: Chaos, tm: TaskManager, ids: list[str],
                       rng: random.Random) -> list[str]:
    """Every wait on a finished task returns within seconds, after a manager kill too: the
    same client waits on some tasks one by one, then on all of them."""
    from raytasks.errors import WaitTimeoutError

    problems = []
    chaos.manager()
    for wanted in [*([t] for t in rng.sample(ids, min(30, len(ids)))), ids]:
        started = time.monotonic()
        try:
            _call(lambda w=wanted: tm.wait_all_sync(w, timeout_s=WAIT_AFTER_KILL_S))
        except WaitTimeoutError as exc:
            problems.append(f"a wait on finished tasks hung after a manager kill: {exc}")
            continue
        if time.monotonic() - started > WAIT_AFTER_KILL_S:
            problems.append(f"a wait on {len(wanted)} finished task(s) took "
                            f"{time.monotonic() - started:.1f} s after a manager kill")
    return problems


def _count(route: Any, name: str) -> int:
    return 0 if route is None else int(getattr(route, name))


def _submit(tm: TaskManager, request: TaskCreateRequest) -> str:
    task_id: str = _call(lambda: tm.submit_sync(request).id)
    return task_id


#: Client calls refused because the store was away or full (``--store-outages``), by kind.
STORE_REFUSALS: Counter[str] = Counter()


def _call(fn: Any, allow_errors: bool = False) -> Any:
    """A client call that retries while the system actors restart (as a client would)."""
    from raytasks.errors import RaytasksError, StoreFullError, StoreUnavailableError

    deadline = time.monotonic() + 120
    while True:
        try:
            return fn()
        except (StoreUnavailableError, StoreFullError) as exc:
            STORE_REFUSALS[type(exc).__name__] += 1  # nothing written: retried, as a client
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
        except RaytasksError:
            if allow_errors:
                return None
            raise
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def check(store: Any, tasks: list[Any], chains: list[list[str]], streamed: list[int],
          artifact_root: Path) -> dict[str, Any]:
    """Every guarantee, checked against the store and the stream; violations listed."""
    problems: list[str] = []
    superseded = finished_late = 0
    events = store.events_after(0, limit=10**7)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_task[e["task_id"]].append(e)
    statuses: Counter[str] = Counter()
    for t in tasks:
        statuses[t.status.value] += 1
        if not t.status.finished:
            problems.append(f"{t.id} is stuck {t.status.value}")
            continue
        mine = by_task[t.id]
        finals = [e for e in mine if e["kind"] == "status"
                  and json.loads(e["payload"])["status"] in ("COMPLETED", "FAILED", "CANCELLED")]
        if [json.loads(e["payload"])["status"] for e in finals].count("COMPLETED") > 1:
            problems.append(f"{t.id} completed twice")
        if not finals:
            problems.append(f"{t.id} has no final event")
            continue
        late = [e for e in mine if e["kind"] == "progress" and e["id"] > finals[-1]["id"]]
        if late:
            problems.append(f"{t.id} has {len(late)} progress event(s) after its final status")
        runs = sorted((artifact_root / t.id).glob("*/run"))
        superseded += len(runs) > 1
        if t.status is TaskStatus.COMPLETED:
            # the result is the one the attempt holding the final lease computed
            accepted = artifact_root / t.id / f"{t.attempt}-{t.lease_token}" / "run"
            if not accepted.exists() or t.result["run"] != accepted.read_text():
                problems.append(f"{t.id}: its result is not the accepted attempt's "
                                f"(attempt {t.attempt}, token {t.lease_token})")
            if t.result_uri and Path(t.result_uri).parent != accepted.parent:
                problems.append(f"{t.id}: result file {t.result_uri} of another attempt")
            # attempts that ran to the end but were not accepted: superseded and fenced off
            finished_late += sum(1 for d in (artifact_root / t.id).glob("*/done")
                                 if d.parent != accepted.parent)
        elif t.status is TaskStatus.FAILED and t.error and t.error.reason == "lost":
            problems.append(f"{t.id} failed as lost")
    by_id = {t.id: t for t in tasks}
    for chain in chains:
        for parent, child in itertools.pairwise(chain):
            p, c = by_id[parent], by_id[child]
            if c.status is TaskStatus.COMPLETED and p.status is not TaskStatus.COMPLETED:
                problems.append(f"{child} completed though {parent} ended {p.status.value}")
            if c.started_at and p.finished_at and c.started_at < p.finished_at:
                problems.append(f"{child} started before {parent} finished")
    stored_ids = [e["id"] for e in events]
    if streamed != stored_ids:
        missing = sorted(set(stored_ids) - set(streamed))
        problems.append(f"the stream skipped {len(missing)} event(s), e.g. {missing[:5]}; "
                        f"repeats: {len(streamed) - len(set(streamed))}")
    return {"problems": problems, "statuses": dict(statuses), "events": len(events),
            "tasks_run_more_than_once": superseded,
            "superseded_attempts_that_finished": finished_late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=45)
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--store-url", default=None)
    parser.add_argument("--postgres", action="store_true",
                        help="on a throwaway PostgreSQL server this run starts and stops")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--store-outages", type=int, default=0,
                        help="stop the store this many times for 15 s each (PostgreSQL "
                             "with --postgres: pg_ctl stop -m immediate; SQLite: another "
                             "process holds the file locked)")
    args = parser.parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="raytasks-soak-")
    url = args.store_url or f"sqlite:///{Path(data_dir) / 'tasks.db'}"
    server = None
    if args.postgres:
        from tests.pg import ThrowawayPostgres

        server = ThrowawayPostgres()
        url = server.start(durable=args.store_outages > 0)
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        report = run(url, data_dir, tasks=args.tasks, kills=args.kills, seed=args.seed,
                     duration_s=args.seconds, store_outages=args.store_outages,
                     postgres=server)
    finally:
        ray.shutdown()
        if server is not None:
            server.stop()
    print(json.dumps(report, indent=2))
    raise SystemExit(1 if report["problems"] else 0)


if __name__ == "__main__":
    main()
