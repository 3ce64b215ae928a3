"""Tasks that eat the node's memory, on a Ray of its own whose memory monitor is set low.

The node's memory line (``RAY_memory_usage_threshold``) is put ``headroom`` MiB above
what the node uses before Ray starts. raytasks' node guard is off, so Ray's monitor acts:

- ``capped`` (``max_memory_mb=300``, two retries, ``retry_oom`` off) allocates past its
  type's ceiling: raytasks' own guard ends it once;
- ``hog`` (``retry_oom``, one retry) allocates until Ray's memory monitor kills its
  executor, twice.

Then a small ``capped`` task runs, to show the system still serves. Prints a JSON report: how
each task ended and how fast, the system actors before and after, Ray's kills by pid.

``--rounds N`` is the long version (``make soak-oom``): N − 1 more ``hog`` tasks, each with
four small tasks beside it; its ``violations`` (a ``hog`` not FAILED out_of_memory, a small
task not COMPLETED, a system actor restarted) make the exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel

from raytasks.memory import MIB, NodeMemory

#: the least headroom left below Ray's line once raytasks is up, for a verdict: less, and
#: other processes on the machine took it (Ray's monitor then kills whatever is newest)
UNSTEADY_MIB = 2000
SYSTEM = ("manager", "progress-tracker", "notifier", "engine")


class HogParams(BaseModel):
    cap_mb: int
    chunk_mb: int = 32


def hog(params: HogParams, ctx: Any) -> dict[str, int]:
    """Allocate (and touch) ``chunk_mb`` at a time until stopped, or ``cap_mb`` is held."""
    held = []
    while len(held) * params.chunk_mb < params.cap_mb:
        block = bytearray(params.chunk_mb * MIB)
        block[::4096] = b"\1" * len(block[::4096])
        held.append(block)
        ctx.report_progress(min(0.99, len(held) * params.chunk_mb / params.cap_mb),
                            f"{len(held) * params.chunk_mb} MiB held")
        time.sleep(0.02)
    return {"held_mb": len(held) * params.chunk_mb}


def system_actors() -> dict[str, dict[str, Any]]:
    """The live system actors by name: actor id, pid, restarts (GCS; the cluster is ours)."""
    import ray

    return {info["Name"]: {"actor_id": info["ActorID"], "pid": info["Pid"],
                           "restarts": info["NumRestarts"]}
            for info in ray._private.state.actors().values()
            if info["Name"] in SYSTEM and info["State"] == "ALIVE"}


def actor_pids() -> dict[int, str]:
    """Every live actor's pid, with its name."""
    import ray

    return {info["Pid"]: info["Name"] for info in ray._private.state.actors().values()
            if info["State"] == "ALIVE" and info["Pid"]}


def oom_kills() -> list[dict[str, Any]]:
    """The workers Ray's memory monitor killed in this cluster (GCS worker table)."""
    from ray._private.state import state
    from ray.core.generated import common_pb2, gcs_pb2

    kills = []
    for raw in state._connect_and_get_accessor().get_worker_table():
        w = gcs_pb2.WorkerTableData.FromString(raw)
        if not w.is_alive and w.exit_type == common_pb2.NODE_OUT_OF_MEMORY:
            kills.append({"pid": w.pid, "mib_at_death": w.memory_used_bytes_at_death // MIB})
    return kills


def soak_round(tm: Any, cap_mb: int) -> dict[str, Any]:
    """One more ``hog`` (Ray's monitor kills it twice) with four small tasks beside it."""
    from raytasks import TaskCreateRequest

    started = time.monotonic()
    hog_task = tm.submit_sync(TaskCreateRequest(name="eat again", task_type="hog",
                                                parameters={"cap_mb": cap_mb}))
    small = [tm.submit_sync(TaskCreateRequest(name="small", task_type="capped",
                                              parameters={"cap_mb": 16})) for _ in range(4)]
    ended = tm.wait_sync(hog_task.id, timeout_s=180)
    statuses = [tm.wait_sync(t.id, timeout_s=180).status.value for t in small]
    return {"hog": ended.status.value, "reason": ended.error.reason if ended.error else None,
            "attempt": ended.attempt, "peak_mib": round((ended.peak_rss_bytes or 0) / MIB, 1),
            "seconds": round(time.monotonic() - started, 2),
            "small": dict(Counter(statuses))}


def main(data_dir: str, headroom_mb: int, rounds: int = 1) -> None:
    node = NodeMemory.read()
    assert node is not None, "needs /proc/meminfo"
    line = node.used + headroom_mb * MIB
    os.environ.update(RAY_memory_usage_threshold=f"{line / node.total:.5f}",
                      RAY_min_memory_free_bytes="-1", RAY_memory_monitor_refresh_ms="100")
    os.environ.pop("RAY_ADDRESS", None)
    import ray

    import raytasks
    from raytasks import Settings, TaskCreateRequest, TaskManager, register_task_type
    from raytasks.cli.tasks import _print_task
    from raytasks.settings import TaskTypeSettings

    temp_dir = tempfile.mkdtemp(prefix="rto-", dir="/tmp")  # socket paths are short
    for tries_left in (2, 1, 0):  # on a loaded machine a raylet may not start in Ray's 30 s
        try:
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, namespace="oom", _temp_dir=temp_dir)
            break
        except Exception as exc:
            ray.shutdown()
            print(f"Ray did not start ({exc}); {tries_left} tries left", file=sys.stderr)
            if not tries_left:
                raise
    try:
        settings = Settings(
            namespace="oom", data_dir=data_dir, workers_per_type=0, retry_backoff_base_s=0.1,
            memory_guard_margin_mb=None, task_types={
                "hog": TaskTypeSettings(workers=1, retry_oom=True, max_retries=1),
                "capped": TaskTypeSettings(workers=1, max_memory_mb=300, max_retries=2)})
        runtime = raytasks.connect(settings=settings)
        register_task_type("hog", hog, params_model=HogParams, runtime=runtime)
        register_task_type("capped", hog, params_model=HogParams, runtime=runtime)
        tm = TaskManager(runtime)
        engine = raytasks.TaskExecutionEngine(runtime)
        pids, watching = actor_pids(), threading.Event()

        def watch() -> None:  # an actor Ray restarts has a new pid, maybe killed next
            while not watching.wait(0.2):
                pids.update(actor_pids())
        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + 90
        while len([e for e in engine.executors_sync() if "pid" in e]) < 2:
            assert time.monotonic() < deadline, "executors did not start"
            time.sleep(0.2)
        before = system_actors()
        ready = NodeMemory.read()
        assert ready is not None
        if ready.used > line - UNSTEADY_MIB * MIB:  # other processes took the headroom
            print(json.dumps({"unsteady": f"the node used {node.used // MIB} MiB before Ray "
                              f"and {ready.used // MIB} MiB with raytasks up, against a line "
                              f"at {line // MIB} MiB"}))
            return
        report: dict[str, Any] = {
            "node_total_mib": node.total // MIB, "used_before_ray_mib": node.used // MIB,
            "ray_kill_line_mib": line // MIB, "used_when_ready_mib": ready.used // MIB,
            "system_before": before}
        # an allocation that surely crosses the line, and stops there if nothing acts
        cap_mb = headroom_mb + 1024
        for task_type in ("capped", "hog"):
            started = time.monotonic()
            task = tm.submit_sync(TaskCreateRequest(
                name=f"eat {task_type}", task_type=task_type, parameters={"cap_mb": cap_mb}))
            done = tm.wait_sync(task.id, timeout_s=120)
            report[task_type] = {
                "status": done.status.value, "attempt": done.attempt,
                "reason": done.error.reason if done.error else None,
                "message": done.error.message if done.error else None,
                "peak_mib": round((done.peak_rss_bytes or 0) / MIB, 1),
                "seconds_to_end": round(time.monotonic() - started, 2), "task_id": task.id}
        report["soak"] = [soak_round(tm, cap_mb) for _ in range(rounds - 1)]
        watching.set()
        shown = io.StringIO()  # what `raytasks show` prints of it
        with contextlib.redirect_stdout(shown):
            _print_task(tm.get_task_sync(report["hog"]["task_id"]),
                        tm.attempts_sync(report["hog"]["task_id"]))
        report["show_hog"] = shown.getvalue()
        report["ray_oom_kills"] = [{**k, "was": pids.get(k["pid"], "no actor: an idle worker")}
                                   for k in oom_kills()]
        report["executor_pids"] = [e.get("pid") for e in engine.executors_sync()]
        report["system_after"] = system_actors()
        served = tm.submit_sync(TaskCreateRequest(name="after", task_type="capped",
                                                  parameters={"cap_mb": 64}))
        report["served_after"] = tm.wait_sync(served.id, timeout_s=60).status.value
        progress = raytasks.ProgressTracker(runtime).get_progress_sync(report["hog"]["task_id"])
        report["tracker_after"] = progress.message if progress else None
        report["violations"] = [
            f"round {i}: {r}" for i, r in enumerate(report["soak"], 1)
            if (r["hog"], r["reason"]) != ("FAILED", "out_of_memory")
            or set(r["small"]) != {"COMPLETED"}]
        if report["system_after"] != report["system_before"]:
            report["violations"].append("a system actor was restarted")
        print(json.dumps(report))
        runtime.shutdown()
        if rounds > 1 and report["violations"]:
            sys.exit(1)
    finally:
        ray.shutdown()
        if not os.environ.get("RAYTASKS_KEEP_RAY_DIR"):
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("headroom_mb", type=int, nargs="?", default=5000)
    parser.add_argument("--rounds", type=int, default=1, help="more hog tasks, each with "
                        "four small tasks beside it (the long version: make soak-oom)")
    args = parser.parse_args()
    main(args.data_dir, args.headroom_mb, args.rounds)
