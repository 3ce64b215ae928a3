"""Research operations from the command line: ``raytasks schedule …`` and ``raytasks logs``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..models import TaskCreateRequest, TaskPriority
from .common import EXIT_INVALID, connect, emit, errors, parse_params


@click.group()
def schedule() -> None:
    """Recurring tasks: cron, interval or trading-calendar rules."""


@schedule.command("add")
@click.argument("name")
@click.argument("task_type")
@click.option("-p", "--param", "params", multiple=True, help="KEY=VALUE (JSON values allowed)")
@click.option("--params", "params_json", default=None, help="all parameters as a JSON object")
@click.option("--priority", type=click.Choice([p.name for p in TaskPriority],
                                              case_sensitive=False), default="MEDIUM")
@click.option("--cron", default=None, help="'30 15 * * 1-5' (minute hour day month weekday)")
@click.option("--every", "interval_s", type=float, default=None, help="seconds between runs")
@click.option("--trading", type=click.Choice(["day", "week_first", "week_last", "month_first",
                                              "month_last"]), default=None,
              help="on trading days of the XSHG calendar")
@click.option("--at", "at_", default=None, help="with --trading: local time HH:MM")
@click.option("--after-close", type=int, default=None,
              help="with --trading: minutes after the 15:00 close")
@click.option("--timezone", default="Asia/Shanghai")
@click.option("--catch-up", type=click.Choice(["skip", "once", "all"]), default="skip")
@click.option("--ready-by", default=None,
              help="local time HH:MM each run's task is due by (next session with --trading)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedule_add(ctx: click.Context, name: str, task_type: str, params: tuple[str, ...],
                 params_json: str | None, priority: str, cron: str | None,
                 interval_s: float | None, trading: str | None, at_: str | None,
                 after_close: int | None, timezone: str, catch_up: str,
                 ready_by: str | None, as_json: bool) -> None:
    """Add a schedule that creates a TASK_TYPE task at every run."""
    from pydantic import ValidationError

    from ..errors import InvalidParametersError
    from ..registry import validation_errors
    from ..schedules import ScheduleCreateRequest

    rule: dict[str, Any] = {}
    if cron:
        rule["cron"] = cron
    if interval_s is not None:
        rule["interval_s"] = interval_s
    if trading:
        rule["trading"] = {"every": trading, "at": None if after_close is not None
                           else at_ or "15:30", "after_close_min": after_close}
    with errors(as_json):
        try:
            request = ScheduleCreateRequest(
                name=name, rule=rule, timezone=timezone, catch_up=catch_up, ready_by=ready_by,
                template=TaskCreateRequest(name=name, task_type=task_type,
                                           parameters=parse_params(params, params_json),
                                           priority=TaskPriority[priority.upper()]))
        except ValidationError as exc:
            raise InvalidParametersError(validation_errors(exc)) from None
        from ..api import TaskManager

        tm = TaskManager(connect(ctx))
        made = tm.create_schedule_sync(request)
        runs = tm.next_runs_sync(made.id, 3)
        emit(as_json, made.model_dump(mode="json"), lambda: click.echo(
            f"{made.id}  {made.name}: next runs " + ", ".join(_run_text(r) for r in runs)))


def _run_text(run: dict[str, Any]) -> str:
    """A coming run as a line: its time, when its task is due, and whether it is provisional."""
    return (str(run["at"]) + (f" (due {run['deadline']})" if run.get("deadline") else "")
            + (" (provisional: past the known calendar)" if run["provisional"] else ""))


@schedule.command("ls")
@click.option("--owner", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedule_ls(ctx: click.Context, owner: str | None, as_json: bool) -> None:
    """List schedules."""
    from ..api import TaskManager

    with errors(as_json):
        found = TaskManager(connect(ctx)).list_schedules_sync(owner)

        def human() -> None:
            click.echo(f"{'ID':32}  {'STATE':7}  {'NEXT RUN':25}  {'READY BY':8}  NAME")
            for s in found:
                click.echo(f"{s.id:32}  {'paused' if s.paused else 'active':7}  "
                           f"{s.next_run_at!s:25}  {s.ready_by or '-':8}  {s.name}"
                           + (f"  (last error: {s.last_error})" if s.last_error else ""))

        emit(as_json, [s.model_dump(mode="json") for s in found], human)


def _change(ctx: click.Context, as_json: bool, action: str, schedule_id: str) -> None:
    """Pause, resume or delete (``action`` ``pause``, ``resume``, ``rm``) a schedule."""
    from ..api import TaskManager

    with errors(as_json):
        tm = TaskManager(connect(ctx))
        if action == "rm":
            tm.delete_schedule_sync(schedule_id)
            emit(as_json, {"deleted": schedule_id}, lambda: click.echo(f"{schedule_id} deleted"))
            return
        changed = (tm.pause_schedule_sync if action == "pause" else
                   tm.resume_schedule_sync)(schedule_id)
        emit(as_json, changed.model_dump(mode="json"),
             lambda: click.echo(f"{changed.id} {'paused' if changed.paused else 'active'}; "
                                f"next run {changed.next_run_at}"))


@schedule.command("pause")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedule_pause(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Stop a schedule's runs until it is resumed."""
    _change(ctx, as_json, "pause", schedule_id)


@schedule.command("resume")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedule_resume(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Resume a paused schedule (runs missed while paused are not made)."""
    _change(ctx, as_json, "resume", schedule_id)


@schedule.command("rm")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedule_rm(ctx: click.Context, schedule_id: str, as_json: bool) -> None:
    """Delete a schedule (tasks it created stay)."""
    _change(ctx, as_json, "rm", schedule_id)


@schedule.command("next")
@click.argument("schedule_id")
@click.option("-n", "count", type=int, default=5)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def schedule_next(ctx: click.Context, schedule_id: str, count: int, as_json: bool) -> None:
    """The next runs of a schedule."""
    from ..api import TaskManager

    with errors(as_json):
        runs = TaskManager(connect(ctx)).next_runs_sync(schedule_id, count)

        def human() -> None:
            for r in runs:
                click.echo(_run_text(r))

        emit(as_json, [{"at": str(r["at"]), "provisional": r["provisional"],
                        "deadline": None if r.get("deadline") is None else str(r["deadline"])}
                       for r in runs], human)


@click.command("logs")
@click.argument("task_id")
@click.option("--attempt", type=int, default=None, help="one attempt only (0 is the first)")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the task ends")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def logs(ctx: click.Context, task_id: str, attempt: int | None, follow: bool,
         as_json: bool) -> None:
    """What a task printed or logged, attempt by attempt."""
    from datetime import UTC, datetime

    from ..api import TaskManager

    if attempt is not None and attempt < 0:
        click.echo("error: --attempt is 0 or more", err=True)
        sys.exit(EXIT_INVALID)
    with errors(as_json):
        tm = TaskManager(connect(ctx))
        rows = tm.follow_logs_sync(task_id, attempt) if follow else \
            iter(tm.logs_sync(task_id, attempt, limit=100_000))
        for row in rows:
            if as_json:
                click.echo(json.dumps(row))
                continue
            when = datetime.fromtimestamp(row["at"], tz=UTC).strftime("%H:%M:%S.%f")[:-3]
            click.echo(f"[{row['attempt']}] {when} {row['stream']:>8}  {row['line']}")
