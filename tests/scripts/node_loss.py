"""A worker node dies under a running task (ray.cluster_utils.Cluster: real raylets).

Executors of the ``sleepy`` type need the custom resource ``worker``, so they live on
worker nodes only. The node running the task is removed; a new node joins; the task runs
again there and completes once. Prints a JSON report.
"""

from __future__ import annotations

import json
import sys
import time

import ray
from ray.cluster_utils import Cluster

import raytasks
from raytasks import Settings, TaskCreateRequest, TaskManager, TaskStatus, register_task_type
from raytasks.settings import TaskTypeSettings
from tests.helpers import SleepParams, sleepy


def main(data_dir: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    doomed = cluster.add_node(num_cpus=1, resources={"worker": 1})
    try:
        ray.init(address=cluster.address, namespace="node-loss", include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        settings = Settings(namespace="node-loss", data_dir=data_dir, lease_ttl_s=2.0,
                            heartbeat_interval_s=0.3, workers_per_type=0,
                            retry_backoff_base_s=0.1, task_types={"sleepy": TaskTypeSettings(
                                workers=1, resources={"worker": 0.5})})
        runtime = raytasks.connect(settings=settings)
        register_task_type("sleepy", sleepy, params_model=SleepParams, runtime=runtime)
        tm = TaskManager(runtime)
        task = tm.submit_sync(TaskCreateRequest(name="t", task_type="sleepy",
                                                parameters={"seconds": 3.0}))
        while tm.get_task_sync(task.id).status is not TaskStatus.RUNNING:
            time.sleep(0.05)
        node_of_executor = raytasks.TaskExecutionEngine(runtime).executors_sync()[0]
        cluster.remove_node(doomed, allow_graceful=False)
        cluster.add_node(num_cpus=1, resources={"worker": 1})
        done = tm.wait_sync(task.id, timeout_s=120)
        events = raytasks.TaskNotificationService(runtime).events_sync(0, timeout_s=0)
        print(json.dumps({
            "status": done.status.value, "attempt": done.attempt,
            "pid_before": node_of_executor["pid"],
            "pid_after": raytasks.TaskExecutionEngine(runtime).executors_sync()[0].get("pid"),
            "completions": sum(1 for e in events if e.task_id == task.id
                               and e.kind == "status" and e.status == "COMPLETED")}))
        runtime.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
