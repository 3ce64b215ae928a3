"""The autoscaling scenario on a fake multi-node cluster, as a client of it.

``python -m tests.scripts.autoscale GCS_ADDRESS DATA_DIR``: with a head that has no
``trainer`` resource, submit training and tune work whose executors need one, and record
how the cluster grows (trainer nodes added), where the work ran, and how it shrinks (the
pool retires its idle executors, then the autoscaler removes the nodes). Prints one JSON
object: the node counts at each step and how long each step took.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

import ray

import raytasks
from raytasks import Settings, TaskCreateRequest, TaskManager
from raytasks.runtime import ENGINE
from raytasks.settings import TaskTypeSettings


def trainer_nodes() -> list[str]:
    return sorted(n["NodeID"] for n in ray.nodes()
                  if n["Alive"] and n["Resources"].get("trainer", 0) > 0)


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"])


def wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def _ran_on(tm: TaskManager, task_id: str, attempt: int) -> str | None:
    """The executor an attempt started on, from raytasks' first line in the task's log."""
    for row in tm.logs_sync(task_id, attempt):
        found = re.match(r"attempt \d+ started on (\S+) ", row["line"])
        if row["stream"] == "raytasks" and found:
            return found[1]
    return None


def main(address: str, data_dir: str) -> None:
    started = time.monotonic()
    settings = Settings(namespace="autoscale", data_dir=data_dir, workers_per_type=0,
                        task_types={"training": TaskTypeSettings(
                            min_workers=0, max_workers=2, idle_timeout_s=5.0,
                            resources={"trainer": 1})})
    runtime = raytasks.connect(address, settings=settings)
    engine = runtime.handle(ENGINE)
    out: dict[str, Any] = {"connect_s": round(time.monotonic() - started, 1),
                           "nodes_before": alive_nodes(),
                           "trainer_nodes_before": len(trainer_nodes()),
                           "pool_before": ray.get(engine.pools_info.remote())["training"]}
    tm = TaskManager(runtime)
    common = {"codes": ["000001.SZ", "600000.SH"], "start": "2021-01-01"}
    t0 = time.monotonic()
    tasks = tm.submit_many_sync([
        TaskCreateRequest(name="train", task_type="training",
                          parameters={"kind": "train", "model": "gbrt", **common}),
        TaskCreateRequest(name="tune", task_type="training",
                          parameters={"kind": "tune", "trials": 4, "rounds": 2, **common})])
    grown = wait(lambda: len(trainer_nodes()) >= 2 and trainer_nodes(), 180,
                 "two trainer nodes")
    out["nodes_up_s"] = round(time.monotonic() - t0, 1)
    # watch the pool while it works: where each executor runs and what it completed
    seen: dict[str, dict[str, Any]] = {}
    while not all(tm.get_task_sync(t.id).status.finished for t in tasks):
        for state in ray.get(engine.stats.remote()):
            if state.get("task_type") == "training" and "node_id" in state:
                seen[state["executor_id"]] = {"node_on_trainer": state["node_id"] in grown,
                                              "completed": state["completed"]}
        time.sleep(0.3)
    done = tm.wait_all_sync([t.id for t in tasks], timeout_s=300)
    out["tasks_done_s"] = round(time.monotonic() - t0, 1)
    out["status"] = [t.status.value for t in done]
    out["errors"] = [t.error.message if t.error else None for t in done]
    out["trainer_nodes_during"] = len(grown)
    out["nodes_during"] = alive_nodes()
    for state in ray.get(engine.stats.remote()):  # the last completions
        if state.get("task_type") == "training" and "node_id" in state:
            seen[state["executor_id"]] = {"node_on_trainer": state["node_id"] in grown,
                                          "completed": state["completed"]}
    out["executors"] = list(seen.values())
    # where each task's accepted attempt ran, from its own log (an executor's completed
    # count is its process's: a replaced or retired process takes its count with it)
    out["attempts"] = [t.attempt for t in done]
    out["ran_on_trainers"] = [
        seen.get(_ran_on(tm, t.id, t.attempt), {}).get("node_on_trainer") for t in done]
    from ray.util.state import list_tasks

    trials = list_tasks(filters=[("func_or_class_name", "=", "_score_trial")], limit=1000,
                        raise_on_missing_output=False)
    out["trials"] = len(trials)
    out["trial_nodes_on_trainers"] = sorted({t.node_id in grown for t in trials})
    out["trial_nodes"] = len({t.node_id for t in trials})
    t1 = time.monotonic()
    wait(lambda: ray.get(engine.pools_info.remote())["training"]["live"] == 0, 120,
         "the idle pool to shrink")
    out["pool_shrunk_s"] = round(time.monotonic() - t1, 1)
    wait(lambda: not trainer_nodes(), 180, "the trainer nodes to go")
    out["nodes_down_s"] = round(time.monotonic() - t1, 1)
    out["nodes_after"] = alive_nodes()
    out["resizes"] = [(r["action"], r["count"], r["size"]) for r in
                      ray.get(engine.pools_info.remote())["training"]["resizes"]]
    runtime.shutdown()
    out["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out), flush=True)
    # the client's wait-stream thread still long-polls the (now killed) manager, and Ray
    # ends a process whose thread calls it after shutdown with status 1: end here instead
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
