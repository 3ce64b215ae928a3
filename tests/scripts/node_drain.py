"""A worker node is drained with a deadline while it runs tasks (ray.cluster_utils.Cluster:
real raylets; the drain is the GCS call the autoscaler, KubeRay and ``ray drain-node``
make). Executors of the ``stepper`` type live on worker nodes only (custom resource
``worker``). Two run on the doomed node: one that looks at its context, one that never
does. A second node joins; the first is drained with a deadline of ``DEADLINE_S``, then
removed at its deadline as an autoscaler would. Prints a JSON report of each task and of
the drain.

``--soak ROUNDS`` (``make soak``): a stream of tasks while, round after round, a node
joins and the oldest worker node goes, drained with a deadline (two rounds in three) or
removed without notice (the third). Prints the figures and the invariants as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster
from ray.core.generated import autoscaler_pb2

import raytasks
from raytasks import Settings, TaskCreateRequest, TaskManager, TaskStatus, register_task_type
from raytasks.settings import TaskTypeSettings
from tests.helpers import StepParams, stepper, steps_run

DEADLINE_S = 8.0


def _drain(address: str, node_id: str, deadline_s: float) -> bool:
    gcs = ray._raylet.GcsClient(address=address)  # type: ignore[attr-defined]
    accepted, _why = gcs.drain_node(
        node_id, autoscaler_pb2.DrainNodeReason.Value(  # type: ignore[attr-defined]
            "DRAIN_NODE_REASON_PREEMPTION"),
        "spot node reclaimed (test)", int(time.time() * 1000 + deadline_s * 1000))
    return bool(accepted)


def _start(cluster: Cluster, data_dir: str, workers: int) -> tuple[Any, TaskManager]:
    ray.init(address=cluster.address, namespace="node-drain", include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    settings = Settings(namespace="node-drain", data_dir=data_dir, lease_ttl_s=3.0,
                        heartbeat_interval_s=0.3, workers_per_type=0,
                        retry_backoff_base_s=0.1, task_types={"stepper": TaskTypeSettings(
                            workers=workers, num_cpus=1, resources={"worker": 1},
                            preempt_grace_s=30.0)})
    runtime = raytasks.connect(settings=settings)
    # not preemptible for deadlines: a drain hands back every type's work
    register_task_type("stepper", stepper, params_model=StepParams, runtime=runtime)
    return runtime, TaskManager(runtime)


def main(cluster: Cluster, data_dir: str) -> None:
    doomed = cluster.add_node(num_cpus=2, resources={"worker": 2})
    marks = Path(tempfile.mkdtemp(dir=data_dir))
    try:
        runtime, tm = _start(cluster, data_dir, workers=2)
        ids = [tm.submit_sync(TaskCreateRequest(
            name=f"steps {how}", task_type="stepper", max_retries=0, parameters={
                "steps": 150, "step_s": 0.1, "marker_dir": str(marks),
                "cooperative": how == "cooperative"})).id
            for how in ("cooperative", "spinning")]
        while not all(len(steps_run(marks, i)) >= 5 for i in ids):
            time.sleep(0.05)
        cluster.add_node(num_cpus=2, resources={"worker": 2})
        drained_at = time.time()
        accepted = _drain(cluster.address, doomed.node_id, DEADLINE_S)
        handed_back: dict[str, float] = {}
        while time.time() < drained_at + DEADLINE_S:
            for i in ids:
                if i not in handed_back and tm.get_task_sync(i).attempt >= 1:
                    handed_back[i] = round(time.time() - drained_at, 2)
            time.sleep(0.05)
        cluster.remove_node(doomed, allow_graceful=False)  # the deadline: the node goes
        done = [tm.wait_sync(i, timeout_s=120) for i in ids]
        events = raytasks.TaskNotificationService(runtime).events_sync(0, timeout_s=0)
        attempts = [tm.attempts_sync(i) for i in ids]
        print(json.dumps({"accepted": accepted, "deadline_s": DEADLINE_S, "tasks": [{
            "status": t.status.value, "attempt": t.attempt, "preemptions": t.preemptions,
            "handed_back_after_s": handed_back.get(t.id),
            "resumed_at": (t.result or {}).get("resumed_at"),
            "steps": [s for _a, s in steps_run(marks, t.id)],
            "reasons": [a.reason for a in attempts[n]],
            "completions": sum(1 for e in events if e.task_id == t.id
                               and e.kind == "status" and e.status == "COMPLETED")}
            for n, t in enumerate(done)]}))
        runtime.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()


def _resumed_after(runtime: Any, gone: str, since: float, wait_s: float = 120.0
                   ) -> float | None:
    """Seconds from ``since`` until two executors off node ``gone`` run tasks again (None:
    not within ``wait_s``, or the stream ran dry)."""
    engine = raytasks.TaskExecutionEngine(runtime)
    end = time.time() + wait_s
    while time.time() < end:
        busy = [e for e in engine.executors_sync()
                if e.get("node_id") not in (None, gone) and e.get("current")]
        if len(busy) >= 2:
            return round(time.time() - since, 2)
        time.sleep(0.1)
    return None


def soak(cluster: Cluster, data_dir: str, rounds: int) -> None:
    """Rounds of node turnover under a stream of stepper tasks (enough to outlast them: ten
    per round, two seconds each on two executors); invariants and figures."""
    tasks = 10 * rounds
    nodes = [cluster.add_node(num_cpus=2, resources={"worker": 2})]
    marks = Path(tempfile.mkdtemp(dir=data_dir))
    steps = 40
    try:
        runtime, tm = _start(cluster, data_dir, workers=2)
        ids = [tm.submit_sync(TaskCreateRequest(
            name=f"s{n}", task_type="stepper", max_retries=rounds, parameters={
                "steps": steps, "step_s": 0.05, "marker_dir": str(marks),
                "cooperative": n % 2 == 0})).id for n in range(tasks)]
        figures: list[dict[str, Any]] = []
        for n in range(rounds):
            time.sleep(2.0)
            nodes.append(cluster.add_node(num_cpus=2, resources={"worker": 2}))
            old = nodes.pop(0)
            began = time.time()
            drained = n % 3 != 2
            if drained:
                accepted = _drain(cluster.address, old.node_id, DEADLINE_S)
                time.sleep(DEADLINE_S)
            cluster.remove_node(old, allow_graceful=False)
            removed = time.time()
            figures.append({"round": n, "how": "drained" if drained else "lost",
                            "accepted": accepted if drained else None,
                            "removed_after_s": round(removed - began, 2),
                            "work_resumed_after_s": _resumed_after(runtime, old.node_id,
                                                                   removed)})
        done = [tm.wait_sync(i, timeout_s=600) for i in ids]
        events = raytasks.TaskNotificationService(runtime).events_sync(0, timeout_s=0)
        completions = {i: 0 for i in ids}
        for e in events:
            if e.kind == "status" and e.status == "COMPLETED" and e.task_id in completions:
                completions[e.task_id] += 1
        reasons = [a.reason for i in ids for a in tm.attempts_sync(i)]
        ran = {i: [s for _a, s in steps_run(marks, i)] for i in ids}
        print(json.dumps({
            "rounds": figures, "tasks": tasks,
            "completed": sum(t.status is TaskStatus.COMPLETED for t in done),
            "completed_twice": sum(c > 1 for c in completions.values()),
            "missing_steps": sum(set(range(steps)) - set(r) != set() for r in ran.values()),
            "steps_redone": sum(len(r) - len(set(r)) for r in ran.values()),
            "handed_back": reasons.count("drained"), "lost": reasons.count("lost"),
            "retries_spent_by_drains": sum(t.attempt - t.preemptions for t in done
                                           if t.preemptions)}))
        runtime.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    if "--soak" in sys.argv:
        soak(head, sys.argv[1], int(sys.argv[sys.argv.index("--soak") + 1]))
    else:
        main(head, sys.argv[1])
