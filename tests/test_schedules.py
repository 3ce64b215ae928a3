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


@pytest.mark.parametrize("name", ["Asia", "localtime", "posixrules", "zone.tab",
                                  "../../etc/localtime", "/etc/localtime",
                                  "Asia/../Asia/Shanghai", "Asia/Shanghai\x00", ""])
def test_a_zone_is_an_iana_name_never_a_path_a_folder_or_the_hosts_own(name: str) -> None:
    # a folder of the tz database once escaped as IsADirectoryError (a 500 over HTTP)
    with pytest.raises(ValidationError, match="unknown timezone") as info:
        hourly(timezone=name)
    assert [e["loc"] for e in info.value.errors()] == [("timezone",)]
    for good in ("Asia/Shanghai", "UTC", "America/New_York"):
        assert hourly(timezone=good).timezone == good


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


# ------------------------------------------------------------------ ready_by


def test_ready_by_is_the_next_session_on_the_calendar_and_the_next_day_without() -> None:
    from raytasks.schedules.rules import next_ready_by

    def due(after: str, sessions_only: bool, ready_by: str = "09:00",
            tz: str = "Asia/Shanghai") -> str:
        return local(next_ready_by(ready_by, tz, at(after), sessions_only=sessions_only))

    # Given a nightly batch that fires after the close, due before the next call auction
    # Then Friday's is due Monday, the eve of National Day's the first session after it
    assert due("2026-03-06 16:00", True) == "2026-03-09 09:00"
    assert due("2026-09-30 16:00", True) == "2026-10-08 09:00"
    assert due("2026-02-13 16:00", True) == "2026-02-24 09:00"  # Spring Festival
    # and a weekday's the next morning; on calendar days Friday's is due Saturday
    assert due("2026-03-03 16:00", True) == "2026-03-04 09:00"
    assert due("2026-03-06 16:00", False) == "2026-03-07 09:00"
    # before ready_by it is the same day's; at ready_by exactly, the next one (strictly after)
    assert due("2026-03-03 08:00", True) == "2026-03-03 09:00"
    assert due("2026-03-03 09:00", True) == "2026-03-04 09:00"
    assert due("2026-03-03 09:00", False, ready_by="23:59") == "2026-03-03 23:59"


def test_ready_by_counts_in_real_time_across_a_dst_fold() -> None:
    from raytasks.schedules.rules import next_ready_by

    ny = ZoneInfo("America/New_York")
    # Given a run at the second 01:15 of the night New York's clocks go back (EST)
    run = datetime(2026, 11, 1, 1, 15, fold=1, tzinfo=ny).timestamp()
    due = next_ready_by("01:45", "America/New_York", run, sessions_only=False)
    # Then 01:45 that night (EDT, before the run in real time) is not it: the next day's is
    assert due is not None and due > run
    assert datetime.fromtimestamp(due, tz=ny).strftime("%m-%d %H:%M") == "11-02 01:45"


@pytest.mark.parametrize("bad", ["25:00", "24:00", "9:00", "9:00pm", "09:00 ", " 09:00",
                                 "0900", "09:60", "09:00:00", "０９:００", "09：00", "",
                                 "x" * 100_000, 900, 9.0, ["09:00"]])
def test_ready_by_takes_only_a_local_hh_mm(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        hourly(ready_by=bad)
    assert [e["loc"] for e in info.value.errors()] == [("ready_by",)]


def test_ready_by_accepts_the_whole_day() -> None:
    for good in ("00:00", "09:00", "19:59", "23:59"):
        assert hourly(ready_by=good).ready_by == good
    assert hourly().ready_by is None


def nightly(ready_by: str | None = "09:00", **rule: Any) -> ScheduleCreateRequest:
    return ScheduleCreateRequest(
        name="nightly", ready_by=ready_by,
        template=TaskCreateRequest(name="sync, retrain, forecast", task_type="noop"),
        rule=ScheduleRule(**rule) if rule else trading(every="day", at="16:00"))


@pytest.mark.parametrize("created, fired, deadline", [
    ("2026-03-06 15:00", "2026-03-06 16:00:05", "2026-03-09 09:00"),  # Friday -> Monday
    ("2026-09-30 15:00", "2026-09-30 16:00:05", "2026-10-08 09:00"),  # before a holiday
    ("2026-03-03 15:00", "2026-03-03 16:00:05", "2026-03-04 09:00"),  # a weekday -> next day
], ids=["friday", "pre-holiday", "weekday"])
async def test_a_run_of_a_schedule_with_ready_by_carries_its_deadline(
        make_core: Any, created: str, fired: str, deadline: str) -> None:
    # Given a trading-day schedule at 16:00 whose runs must be ready by 09:00
    clock = Clock(at(created))
    core = make_core(clock)
    schedule = await core.create_schedule(nightly())
    assert schedule.ready_by == "09:00"
    # and its preview says when the coming run will be due
    (coming,) = core.next_runs(schedule.id, 1)
    assert local(coming["deadline"].timestamp()) == deadline
    # When it fires, on a manager started after the schedule was stored
    clock.now = at(fired)
    again = make_core(clock)
    assert again.get_schedule(schedule.id).ready_by == "09:00"
    assert await again.schedules.tick() == 1
    # Then its task is due at the next session's 09:00 in Shanghai
    (task_id,) = await runs(again)
    task = await again.get(task_id)
    assert task.deadline is not None and local(task.deadline.timestamp()) == deadline


async def test_ready_by_on_a_cron_schedule_counts_calendar_days_and_none_means_none(
        make_core: Any) -> None:
    clock = Clock(at("2026-03-06 15:00"))
    core = make_core(clock)
    # Given two cron schedules on Friday 16:00, one ready by 09:00 and one without
    with_ready_by = await core.create_schedule(nightly(cron="0 16 * * 1-5"))
    without = await core.create_schedule(nightly(None, cron="0 16 * * 1-5"))
    clock.now = at("2026-03-06 16:00:05")
    assert await core.schedules.tick() == 2
    # Then the first run's task is due the next calendar morning, the other's has no deadline
    tasks = {(await core.get(t)).idempotency_key.split(":")[1]: await core.get(t)  # type: ignore[union-attr]
             for t in await runs(core)}
    assert local(tasks[with_ready_by.id].deadline.timestamp()) == "2026-03-07 09:00"  # type: ignore[union-attr]
    assert tasks[without.id].deadline is None
    assert core.next_runs(without.id, 1)[0]["deadline"] is None


async def test_a_caught_up_run_is_due_when_it_would_have_been(make_core: Any) -> None:
    # Given a schedule whose Monday and Tuesday 16:00 runs were missed while the manager was down
    clock = Clock(at("2026-03-02 15:00"))
    core = make_core(clock)
    schedule = await core.create_schedule(nightly().model_copy(update={"catch_up": "all"}))
    clock.now = at("2026-03-04 08:00")
    again = make_core(clock)
    assert await again.schedules.tick() == 2
    # Then each run's task is due by the morning after its own run (Monday's already late)
    found = [await again.get(t) for t in await runs(again)]
    assert sorted(local(t.deadline.timestamp()) for t in found) == [  # type: ignore[union-attr]
        "2026-03-03 09:00", "2026-03-04 09:00"]
    assert again.get_schedule(schedule.id).last_error is None


async def test_a_schedule_template_cannot_carry_a_fixed_deadline(make_core: Any) -> None:
    core = make_core(Clock(at("2026-03-03 09:30")))
    fixed = nightly().model_copy(update={"template": TaskCreateRequest(
        name="t", task_type="noop", deadline=datetime(2026, 3, 4, 9, tzinfo=SH))})
    with pytest.raises(InvalidParametersError, match=r"template\.deadline") as info:
        await core.create_schedule(fixed)
    assert "ready_by" in str(info.value)
    assert core.list_schedules() == []
