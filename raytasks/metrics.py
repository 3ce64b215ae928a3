"""Task metrics from the event stream: Prometheus text, and the same figures in Ray's metrics.

:class:`MetricsRecorder` lives in the notifier actor and sees every status
event once (it tails the outbox); the actor hands it a :class:`MetricsMirror`
that repeats the figures in Ray's metrics (:mod:`raytasks.runtime.metrics`).
Queue depths are not events: the HTTP server adds them at scrape time from the
manager's statistics.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Tasks whose queue/start times are remembered; past it the oldest are forgotten.
TRACKED_MAX = 100_000

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200)


class MetricsMirror(Protocol):
    """Somewhere else the recorder's figures go as well (tags: ``task_type``, ``priority``,
    and ``status`` for finished tasks)."""

    def finished(self, tags: dict[str, str]) -> None: ...

    def retried(self, tags: dict[str, str]) -> None: ...

    def waited(self, seconds: float, tags: dict[str, str]) -> None: ...

    def ran(self, seconds: float, tags: dict[str, str]) -> None: ...


class MetricsRecorder:
    """Prometheus counters and histograms of task events, repeated to ``mirror`` if given."""

    def __init__(self, mirror: MetricsMirror | None = None) -> None:
        self.registry = CollectorRegistry()
        labels = ("task_type", "priority")
        self.finished = Counter("raytasks_tasks_finished", "Tasks that reached a final status",
                                (*labels, "status"), registry=self.registry)
        self.retries = Counter("raytasks_task_retries", "Attempts sent back to the queue",
                               labels, registry=self.registry)
        self.started = Counter("raytasks_tasks_started", "Attempts started", labels,
                               registry=self.registry)
        self.wait = Histogram("raytasks_task_wait_seconds", "Time from queued to started",
                              labels, buckets=BUCKETS, registry=self.registry)
        self.run = Histogram("raytasks_task_run_seconds", "Time from started to finished",
                             labels, buckets=BUCKETS, registry=self.registry)
        self.cpu = Counter("raytasks_task_cpu_seconds", "CPU seconds attempts used, by owner "
                           "('' for tasks without one)", ("owner", "task_type"),
                           registry=self.registry)
        self._queued_at: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self.mirror = mirror

    def observe(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if row["kind"] != "status":
                continue
            p = json.loads(row["payload"])
            task_id, status, at = p["task_id"], p["status"], float(p["at"])
            labels = (p.get("task_type") or "", str(p.get("priority") or ""))
            tags = {"task_type": labels[0], "priority": labels[1]}
            if p.get("cpu_s"):  # an attempt reported what it used
                self.cpu.labels(p.get("owner") or "", labels[0]).inc(float(p["cpu_s"]))
            if status == "PENDING":
                _bounded_put(self._queued_at, task_id, at)
                if p.get("previous") == "RUNNING":
                    self.retries.labels(*labels).inc()
                    if self.mirror is not None:
                        self.mirror.retried(tags)
                    self._observe_run(task_id, at, labels, tags)
            elif status == "RUNNING":
                self.started.labels(*labels).inc()
                _bounded_put(self._started_at, task_id, at)
                queued = self._queued_at.pop(task_id, None)
                if queued is not None:
                    self.wait.labels(*labels).observe(max(0.0, at - queued))
                    if self.mirror is not None:
                        self.mirror.waited(max(0.0, at - queued), tags)
            else:
                self.finished.labels(*labels, status).inc()
                if self.mirror is not None:
                    self.mirror.finished({**tags, "status": status})
                self._queued_at.pop(task_id, None)
                self._observe_run(task_id, at, labels, tags)

    def _observe_run(self, task_id: str, at: float, labels: tuple[str, str],
                     tags: dict[str, str]) -> None:
        started = self._started_at.pop(task_id, None)
        if started is not None:
            self.run.labels(*labels).observe(max(0.0, at - started))
            if self.mirror is not None:
                self.mirror.ran(max(0.0, at - started), tags)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def _bounded_put(times: dict[str, float], task_id: str, at: float) -> None:
    times.pop(task_id, None)
    times[task_id] = at
    while len(times) > TRACKED_MAX:  # tasks whose end was never seen (deleted, pruned)
        del times[next(iter(times))]


def queue_metrics_text(stats: dict[str, Any]) -> str:
    """Queue depth by queue and priority, oldest wait and status counts, from manager stats."""
    registry = CollectorRegistry()
    depth = Gauge("raytasks_queue_depth", "Tasks waiting, by queue and priority",
                  ("queue", "priority"), registry=registry)
    delayed = Gauge("raytasks_queue_delayed", "Tasks waiting for a retry backoff", ("queue",),
                    registry=registry)
    leased = Gauge("raytasks_queue_leased", "Tasks leased to executors", ("queue",),
                   registry=registry)
    oldest = Gauge("raytasks_queue_oldest_wait_seconds", "Age of the oldest waiting task",
                   ("queue",), registry=registry)
    counts = Gauge("raytasks_tasks", "Stored tasks by status", ("status",), registry=registry)
    for q in stats["queues"]:
        for priority, n in q["waiting"].items():
            depth.labels(q["queue"], priority).set(n)
        delayed.labels(q["queue"]).set(q["delayed"])
        leased.labels(q["queue"]).set(q["leased"])
        oldest.labels(q["queue"]).set(q["oldest_wait_s"])
    for status, n in stats["status_counts"].items():
        counts.labels(status).set(n)
    return generate_latest(registry).decode()
