"""What Ray knows about an executor process it killed for memory (:mod:`raytasks.memory`).

Ray's memory monitor records its kills in the GCS worker table: the dead worker's exit
type is ``NODE_OUT_OF_MEMORY``, with its words on the node's memory and the bytes the
process held at death. An executor Ray restarts after such a kill asks here, by the pid
its predecessor wrote in its attempt record.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import ray

log = logging.getLogger(__name__)

#: how long the GCS may take to record a death the restart already followed
DEATH_WAIT_S = 10.0


def record_path(namespace: str, executor_id: str) -> Path | None:
    """Where an executor keeps the record of the attempt it runs: a file in this node's
    Ray session (gone with the session, never seen by another node)."""
    node: Any = ray._private.worker._global_node
    if node is None:  # not in a Ray worker
        return None
    session = node.get_session_dir_path()
    safe = executor_id.replace("/", "_")
    return Path(session) / "raytasks" / namespace / f"{safe}.json"


def death_cause(pid: int) -> tuple[str, int] | None:
    """Ray's words and the bytes held at death, when Ray's memory monitor killed the
    worker ``pid`` of this node; None when it died otherwise or Ray has no record of it."""
    from ray._private.state import state
    from ray.core.generated import common_pb2, gcs_pb2

    table: Any = gcs_pb2.WorkerTableData  # type: ignore[attr-defined]
    oom_exit: Any = common_pb2.NODE_OUT_OF_MEMORY  # type: ignore[attr-defined]

    node_id = ray.get_runtime_context().get_node_id()
    deadline = time.monotonic() + DEATH_WAIT_S
    while True:
        for raw in state._connect_and_get_accessor().get_worker_table():
            worker = table.FromString(raw)
            if worker.pid != pid or worker.worker_address.node_id.hex() != node_id:
                continue
            if worker.is_alive:
                break  # not dead yet as far as the GCS knows
            oom = worker.exit_type == oom_exit or \
                "low on memory" in worker.exit_detail
            log.info("the previous process (pid %d) died: %s", pid,
                     "Ray's memory monitor killed it" if oom else "not for memory")
            return (worker.exit_detail, worker.memory_used_bytes_at_death) if oom else None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)
