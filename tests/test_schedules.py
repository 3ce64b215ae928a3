"""Schedules with a clock the test controls: trading-calendar rules, catch-up, no duplicates."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from raytasks.errors import InvalidParametersError, QuotaExceededError
from raytasks.manager import TaskManagerCore
from raytasks.models import TaskCreateRequest, TaskQuery
from raytasks.registry import TaskTypeSpec
from raytasks.schedules import ScheduleCreateRequest, ScheduleRule, TradingRule
from raytasks.schedules.rules import next_fire, preview
from raytasks.settings import QuotaSettings, Settings

SH = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    """A Shanghai wall-clock time as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=SH).timestamp()


def local(epoch: float | None) -> str:
    assert epoch is not None
    return datetime.fromtimestamp(epoch, tz=SH).strftime("%Y-%m-%d %H:%M")


def trading(**kw: Any) -> ScheduleRule:
    return ScheduleRule(trading=TradingRule(**kw))


def test_a_trading_day_rule_skips_weekends_and_spring_festival() -> None:
    every_day = trading(every="day", at="15:30")
    # Given Friday 13 February 2026 after the run, the next session is after the holiday
    assert local(next_fire(every_day, "Asia/Shanghai", at("2026-02-13 16:00"))) == \
        "2026-02-24 15:30"
    # whereas a weekday cron line fires on the holiday Monday
    weekdays = ScheduleRule(cron="30 15 * * 1-5")
    assert local(next_fire(weekdays, "Asia/Shanghai", at("2026-02-13 16:00"))) == \
        "2026-02-16 15:30"
    # before 15:30 on a session, the run is the same day; N minutes after the close works too
    assert local(next_fire(every_day, "Asia/Shanghai", at("2026-03-03 09:00"))) == \
        "2026-03-03 15:30"
    after_close = trading(at=None, after_close_min=45)
    assert local(next_fire(after_close, "Asia/Shanghai", at("2026-03-03 09:00"))) == \
        "2026-03-03 15:45"


def test_first_and_last_trading_day_of_a_week_or_month() -> None:
    tz = "Asia/Shanghai"
    assert local(next_fire(trading(every="week_last"), tz, at("2026-02-09 09:00"))) == \
        "2026-02-13 15:30"
    # the week of 16-20 February has no session: the next week's last is the next run
    assert local(next_fire(trading(every="week_last"), tz, at("2026-02-14 09:00"))) == \
        "2026-02-27 15:30"
    assert local(next_fire(trading(every="month_last"), tz, at("2026-02-01 09:00"))) == \
        "2026-02-27 15:30"
    assert local(next_fire(trading(every="month_first"), tz, at("2026-02-28 09:00"))) == \
        "2026-03-02 15:30"
    # past the installed calendar (its year) runs are weekdays, marked provisional
    runs = preview(trading(every="month_first"), tz, at("2026-11-29 09:00"), 3)
    assert [(r["at"].strftime("%Y-%m-%d"), r["provisional"]) for r in runs] == [  # type: ignore[attr-defined]
        ("2026-12-01", False), ("2027-01-01", True), ("2027-02-01", True)]


def test_rules_refuse_what_is_not_one_clear_rule() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ScheduleRule(cron="0 * * * *", interval_s=60)
    with pytest.raises(ValidationError, match="5-field cron"):
        ScheduleRule(cron="61 * * * *")
    with pytest.raises(ValidationError, match="unknown timezone"):
        ScheduleCreateRequest(name="x", template=TaskCreateRequest(name="t", task_type="noop"),
                              rule=ScheduleRule(interval_s=60), timezone="Mars/Olympus")


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_core(store_url: str, tmp_path: Path) -> Any:
    made: list[TaskManagerCore] = []

    def make(clock: Clock, **overrides: Any) -> TaskManagerCore:
        core = TaskManagerCore(Settings(data_dir=tmp_path, store_url=store_url, **overrides),
                               clock=clock)
        core.registry.register(TaskTypeSpec("noop", lambda p, c: None))
        core.reconcile()
        made.append(core)
        return core

    yield make
    for core in made:
        core.close()


def hourly(catch_up: str = "skip", **kw: Any) -> ScheduleCreateRequest:
    return ScheduleCreateRequest(name="hourly", catch_up=catch_up,  # type: ignore[arg-type]
                                 template=TaskCreateRequest(name="run", task_type="noop"),
                                 rule=ScheduleRule(cron="0 * * * *"), **kw)


async def runs(core: TaskManagerCore) -> list[str]:
    page = await core.query(TaskQuery(limit=1000))
    return sorted(t.id for t in page.items)


@pytest.mark.parametrize("catch_up, made", [("skip", 1), ("once", 1), ("all", 4)])
async def test_catch_up_after_the_manager_was_down(make_core: Any, catch_up: str,
                                                   made: int) -> None:
    # Given an hourly schedule created at 09:30
    clock = Clock(at("2026-03-03 09:30"))
    core = make_core(clock)
    schedule = await core.create_schedule(hourly(catch_up))
    # When the manager is down from before 10:00 until 13:00:10
    clock.now = at("2026-03-03 13:00:10")
    again = make_core(clock)
    assert await again.schedules.tick() == made
    # Then skip makes only the run that is due now, once makes one, all makes each missed
    assert len(await runs(again)) == made
    stored = again.get_schedule(schedule.id)
    assert local(stored.next_run_at.timestamp()) == "2026-03-03 14:00"  # type: ignore[union-attr]
    assert await again.schedules.tick() == 0  # nothing twice


async def test_skip_drops_a_run_missed_by_more_than_the_grace(make_core: Any) -> None:
    clock = Clock(at("2026-03-03 09:30"))
    core = make_core(clock)
    await core.create_schedule(hourly("skip"))
    clock.now = at("2026-03-03 12:20")
    assert await make_core(clock).schedules.tick() == 0


async def test_no_duplicate_run_when_the_manager_restarts_at_the_firing_instant(
        make_core: Any) -> None:
    clock = Clock(at("2026-03-03 09:30"))
    core = make_core(clock)
    schedule = await core.create_schedule(hourly("once"))
    clock.now = at("2026-03-03 10:00:01")
    # Given a manager that created the 10:00 run and died before recording it
    assert await core.schedules.tick() == 1
    core.store.schedules.update(schedule.id, last_run_at=None,
                                next_run_at=at("2026-03-03 10:00"))
    # When a new manager (and a second one beside it) start at the same instant
    again, other = make_core(clock), make_core(clock)
    await again.schedules.tick()
    await other.schedules.tick()
    # Then the run exists once: its idempotency key is the schedule and the run time
    (task_id,) = await runs(again)
    task = await again.get(task_id)
    assert task.idempotency_key == f"schedule:{schedule.id}:{round(at('2026-03-03 10:00'))}"


async def test_pause_resume_delete_and_preview(make_core: Any) -> None:
    clock = Clock(at("2026-03-03 09:30"))
    core = make_core(clock)
    schedule = await core.create_schedule(ScheduleCreateRequest(
        name="close", template=TaskCreateRequest(name="sync", task_type="noop"),
        rule=trading(every="day", at="15:30")))
    assert [r["at"].strftime("%m-%d %H:%M") for r in core.next_runs(schedule.id, 3)] == \
        ["03-03 15:30", "03-04 15:30", "03-05 15:30"]  # type: ignore[attr-defined]
    await core.pause_schedule(schedule.id)
    clock.now = at("2026-03-04 15:30:05")
    assert await core.schedules.tick() == 0
    resumed = await core.resume_schedule(schedule.id)
    assert local(resumed.next_run_at.timestamp()) == "2026-03-05 15:30"  # type: ignore[union-attr]
    await core.delete_schedule(schedule.id)
    assert core.list_schedules() == [] and make_core(clock).list_schedules() == []


async def test_schedules_follow_the_owners_limits(make_core: Any) -> None:
    clock = Clock(at("2026-03-03 09:30"))
    core = make_core(clock, quotas={"*": QuotaSettings(max_schedules=1,
                                                       min_schedule_interval_s=300)})
    with pytest.raises(InvalidParametersError, match="min_schedule_interval_s=300"):
        await core.create_schedule(ScheduleCreateRequest(
            name="fast", owner="alice", rule=ScheduleRule(interval_s=10),
            template=TaskCreateRequest(name="t", task_type="noop")))
    with pytest.raises(InvalidParametersError, match=r"template\.parameters"):
        await core.create_schedule(hourly(owner="alice").model_copy(update={
            "template": TaskCreateRequest(name="t", task_type="prediction",
                                          parameters={"stock_code": "nope"})}))
    await core.create_schedule(hourly(owner="alice"))
    with pytest.raises(QuotaExceededError, match="max_schedules=1"):
        await core.create_schedule(hourly(owner="alice"))
    assert len(core.list_schedules("alice")) == 1 and core.list_schedules("bob") == []
