"""Task and queue metrics in Ray's metrics (``ray.util.metrics``), beside the Prometheus text.

:class:`RayMetricsMirror` repeats what :class:`~raytasks.metrics.MetricsRecorder`
records in the notifier actor; :class:`RayQueueGauges` is set by the manager actor.
"""

from __future__ import annotations

from typing import Any

from ray.util import metrics as ray_metrics

from ..metrics import BUCKETS


class RayMetricsMirror:
    """The task figures of :class:`~raytasks.metrics.MetricsRecorder`, as Ray metrics."""

    def __init__(self) -> None:
        keys = ("task_type", "priority")
        self._finished = ray_metrics.Counter("raytasks_tasks_finished", "tasks finished",
                                         tag_keys=(*keys, "status"))
        self._retries = ray_metrics.Counter("raytasks_task_retries", "retries", tag_keys=keys)
        self._wait = ray_metrics.Histogram("raytasks_task_wait_seconds", "queued to started",
                                       boundaries=list(BUCKETS), tag_keys=keys)
        self._run = ray_metrics.Histogram("raytasks_task_run_seconds", "started to finished",
                                      boundaries=list(BUCKETS), tag_keys=keys)

    def finished(self, tags: dict[str, str]) -> None:
        self._finished.inc(tags=tags)

    def retried(self, tags: dict[str, str]) -> None:
        self._retries.inc(tags=tags)

    def waited(self, seconds: float, tags: dict[str, str]) -> None:
        self._wait.observe(seconds, tags=tags)

    def ran(self, seconds: float, tags: dict[str, str]) -> None:
        self._run.observe(seconds, tags=tags)


class RayQueueGauges:
    """Queue depth by queue and priority as Ray metrics (set by the manager actor)."""

    def __init__(self) -> None:
        self.depth = ray_metrics.Gauge("raytasks_queue_depth", "Tasks waiting",
                                   tag_keys=("queue", "priority"))
        self.oldest = ray_metrics.Gauge("raytasks_queue_oldest_wait_seconds",
                                    "Age of the oldest waiting task", tag_keys=("queue",))

    def update(self, stats: dict[str, Any]) -> None:
        for q in stats["queues"]:
            for priority, n in q["waiting"].items():
                self.depth.set(n, tags={"queue": q["queue"], "priority": priority})
            self.oldest.set(q["oldest_wait_s"], tags={"queue": q["queue"]})
