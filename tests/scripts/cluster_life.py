"""One life of a whole raytasks cluster, for the cluster-restart test.

``first DATA_DIR``: start an embedded Ray, submit work, wait until one task runs, print the
ids as JSON and exit while work is still running and queued (the whole cluster goes down).
``second DATA_DIR``: start a fresh embedded Ray on the same store and wait for every task.
"""

from __future__ import annotations

import json
import sys
import time

import raytasks
from raytasks import Settings, TaskCreateRequest, TaskManager, TaskStatus, register_task_type
from raytasks.settings import TaskTypeSettings
from tests.helpers import SleepParams, sleepy


def main(stage: str, data_dir: str) -> None:
    settings = Settings(namespace="cluster-life", data_dir=data_dir, lease_ttl_s=2.0,
                        heartbeat_interval_s=0.3, workers_per_type=0,
                        retry_backoff_base_s=0.1,
                        task_types={"sleepy": TaskTypeSettings(workers=1)})
    runtime = raytasks.connect(settings=settings)
    tm = TaskManager(runtime)
    if stage == "first":
        register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=runtime)
        tasks = tm.submit_many_sync([TaskCreateRequest(
            name=f"t{i}", task_type="sleepy", parameters={"seconds": 1.0}) for i in range(4)])
        while tm.get_task_sync(tasks[0].id).status is not TaskStatus.RUNNING:
            time.sleep(0.05)
        print(json.dumps([t.id for t in tasks]))
        return  # the embedded cluster, and every actor with it, goes down here
    ids = json.loads(sys.stdin.read())
    done = tm.wait_all_sync(ids, timeout_s=120)
    events = raytasks.TaskNotificationService(runtime).events_sync(0, timeout_s=0)
    print(json.dumps({
        "status": [t.status.value for t in done], "attempts": [t.attempt for t in done],
        "completions": [sum(1 for e in events if e.task_id == t.id and e.kind == "status"
                            and e.status == "COMPLETED") for t in done]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
