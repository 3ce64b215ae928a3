"""Floods from a client loop (issue 23): a notebook loop submitting far past
``max_queue_size`` gets a clear refusal for every call past its room, never a hang; memory
stays what the full queue holds (refused calls cost none); and another owner is still
served. The long version is ``raytasks bench flood`` (1,000,000 submits against 100,000)."""

from __future__ import annotations

from typing import Any

from raytasks import TaskCreateRequest, TaskManager, TaskQuery, register_task_type
from raytasks.benchmarks.core import noop
from raytasks.benchmarks.flood import client_flood
from raytasks.errors import QueueFullError

QUEUE = 2000
#: What refused calls may add to a process's RSS (MB): an allocator's slack, far below
#: what keeping anything per refused call would cost over thousands of them.
SLACK_MB = 32.0


def _grown_after_full(loop: dict[str, Any]) -> dict[str, float]:
    """Each process's RSS growth from the point the loop was last accepted to its end."""
    curve = loop["curve"]
    full = next(p for p in curve if p["accepted"] == loop["accepted"])
    return {k: curve[-1]["rss_mb"][k] - full["rss_mb"][k] for k in full["rss_mb"]}


def test_a_client_loop_far_past_the_queue_is_refused_and_other_owners_are_served(
        make_service: Any) -> None:
    # Given a queue of 2,000 that nothing drains (the type has no executor)
    service = make_service(max_queue_size=QUEUE)
    register_task_type("noop", noop, workers=0, runtime=service)
    tm = TaskManager(service)

    # When carol's notebook loop submits 6,000 tasks one call each
    carol = client_flood(service, 6000, "carol", chunk=1, points=6)
    # Then she is held at her share of the queue, each call past it refused with the
    # limit named (a refusal is an answer: the loop ended)
    assert carol["accepted"] == QUEUE // 2
    assert carol["refused"] == {"QuotaExceededError(max_queue_share)": 6000 - QUEUE // 2}
    assert "max_queue_share=1000" in carol["first_refusal"]
    # and dave, another owner, is still served: his submit is accepted and his list read
    dave = tm.submit_sync(TaskCreateRequest(name="d", task_type="noop", owner="dave"))
    assert [t.id for t in tm.list_tasks_sync(TaskQuery(owner="dave")).items] == [dave.id]

    # When a trusted (ownerless) loop, bound by no share, submits 6,000 more
    trusted = client_flood(service, 6000, None, chunk=1, points=6)
    # Then it fills the rest of the queue exactly, and every call past it is QueueFullError
    assert trusted["accepted"] == QUEUE - QUEUE // 2 - 1
    assert trusted["refused"] == {"QueueFullError": 6000 - trusted["accepted"]}
    assert "is full (2000 of 2000 tasks waiting)" in trusted["first_refusal"]
    assert sum(sum(q["waiting"].values()) for q in tm.stats_sync()["queues"]) == QUEUE
    # and a batch is refused whole, nothing of it stored
    try:
        tm.submit_many_sync([TaskCreateRequest(name="b", task_type="noop")] * 10)
        raise AssertionError("a batch past a full queue was accepted")
    except QueueFullError:
        pass
    assert tm.stats_sync()["status_counts"] == {"PENDING": QUEUE}

    # and no process kept anything of the refused calls: 5,000 of them after the queue
    # was full grew no process (actors and this client) past an allocator's slack
    for loop in (carol, trusted):
        grown = _grown_after_full(loop)
        assert set(grown) == {"manager", "tracker", "notifier", "engine", "client"}
        assert all(mb < SLACK_MB for mb in grown.values()), grown


def test_bench_endurance_runs_and_reads_every_actor_and_the_store(make_service: Any) -> None:
    from raytasks.benchmarks.endurance import format_endurance, run_endurance
    from raytasks.settings import TaskTypeSettings

    # Given a service with retention on (the long run is `raytasks bench endurance`)
    service = make_service(task_retention_s=1.0, event_retention_s=1.0,
                           task_types={"noop": TaskTypeSettings(workers=1)})
    # When a few hundred tasks go through it, read at five points
    figures = run_endurance(tasks=300, chunk=50, window=100, points=5, runtime=service)
    # Then every task completed, and each point read every actor's memory and the store
    assert figures["failed"] == 0 and figures["tasks"] == 300
    assert figures["curve"][0]["tasks"] == 0
    assert figures["curve"][-1]["tasks"] == 300 and len(figures["curve"]) >= 5
    for point in figures["curve"]:
        assert set(point["rss_mb"]) == {"manager", "tracker", "notifier", "engine"}
        assert all(mb > 0 for mb in point["rss_mb"].values()), point
    assert figures["curve"][-1]["store"]["tasks"] == 300  # none pruned yet (every minute)
    assert set(figures["rss_ratio"]) == {"manager", "tracker", "notifier", "engine"}
    assert all(mb > 0 for mb in figures["rss_trimmed_mb"].values())
    assert set(figures["rss_trimmed_mb"]) == set(figures["rss_ratio"])
    text = format_endurance(figures)
    assert "RSS at the end / after the first 10 %" in text and "store: at most" in text


def test_bench_flood_prints_both_floods(make_service: Any) -> None:
    from raytasks.benchmarks.flood import format_flood

    # the printout of `raytasks bench flood`, from a short client loop's real figures
    service = make_service(max_queue_size=40)
    register_task_type("noop", noop, workers=0, runtime=service)
    loop = client_flood(service, 100, "carol", chunk=10, points=4)
    assert loop["accepted"] == 20 and loop["refused"] == \
        {"QuotaExceededError(max_queue_share)": 80}
    text = format_flood({"max_queue_size": 40, "owner_loop": loop, "trusted_loop": loop,
                         "colleague_submit_ms": 1.0, "colleague_list_ms": 1.0,
                         "waiting": 20})
    assert "an owner's loop: 100 submits in calls of 10: 20 accepted" in text
    assert "RSS MB once full -> after every refusal" in text
