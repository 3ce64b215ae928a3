"""Tasks from the command line: ``raytasks submit``, ``submit-many``, ``ls``, ``show``,
``watch``, ``cancel``, ``retry`` and ``stats``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from ..errors import InvalidParametersError
from ..models import (
    AttemptInfo,
    Task,
    TaskCreateRequest,
    TaskPriority,
    TaskQuery,
    TaskStatus,
)
from .common import EXIT_FAILED, connect, emit, errors, parse_params


@click.command()
@click.argument("task_type")
@click.option("--name", default=None)
@click.option("-p", "--param", "params", multiple=True, help="KEY=VALUE (JSON values allowed)")
@click.option("--params", "params_json", default=None, help="all parameters as a JSON object")
@click.option("--priority", type=click.Choice([p.name for p in TaskPriority],
                                              case_sensitive=False), default="MEDIUM")
@click.option("--queue", default="default")
@click.option("--timeout", "timeout_s", type=float, default=None, help="seconds")
@click.option("--retries", "max_retries", type=int, default=None)
@click.option("--depends-on", multiple=True)
@click.option("--idempotency-key", default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("--deadline", default=None, help="when it must be done: an ISO time "
              "(2026-12-08T09:00+08:00; without an offset, this machine's time zone)")
@click.option("--cache/--no-cache", default=None, help="take a finished task's result when "
              "the inputs are unchanged (default: the type's setting)")
@click.option("--wait", "wait_", is_flag=True, help="wait for the task and print it")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(ctx: click.Context, task_type: str, name: str | None, params: tuple[str, ...],
           params_json: str | None, priority: str, queue: str, timeout_s: float | None,
           max_retries: int | None, depends_on: tuple[str, ...], idempotency_key: str | None,
           tags: tuple[str, ...], deadline: str | None, cache: bool | None, wait_: bool,
           as_json: bool) -> None:
    """Create and queue a task of TASK_TYPE."""
    from pydantic import ValidationError

    from ..api import TaskManager

    with errors(as_json):
        due = _local_time(deadline)
    try:
        request = TaskCreateRequest(
            name=name or task_type, task_type=task_type,
            parameters=parse_params(params, params_json), priority=TaskPriority[priority.upper()],
            queue=queue, timeout_s=timeout_s, max_retries=max_retries,
            depends_on=list(depends_on), idempotency_key=idempotency_key, tags=list(tags),
            deadline=due, cache=cache)
    except ValidationError as exc:
        from ..registry import validation_errors

        with errors(as_json):
            raise InvalidParametersError(validation_errors(exc)) from None
        return
    with errors(as_json):
        tm = TaskManager(connect(ctx))
        task = tm.submit_sync(request)
        if wait_:
            task = tm.wait_sync(task.id)
        emit(as_json, task.model_dump(mode="json"), lambda: _print_task(task))
        if wait_ and task.status is not TaskStatus.COMPLETED:
            sys.exit(EXIT_FAILED)


@click.command("submit-many")
@click.argument("file", type=click.File("r"))
@click.option("--wait", "wait_", is_flag=True, help="wait for every task")
@click.option("--timeout", "timeout_s", type=float, default=None, help="seconds, with --wait")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit_many(ctx: click.Context, file: Any, wait_: bool, timeout_s: float | None,
                as_json: bool) -> None:
    """Create and queue every request in FILE (a JSON list; - for standard input)."""
    from pydantic import TypeAdapter, ValidationError

    from ..api import TaskManager
    from ..registry import validation_errors

    with errors(as_json):
        try:
            requests = TypeAdapter(list[TaskCreateRequest]).validate_json(file.read())
        except ValidationError as exc:
            raise InvalidParametersError(validation_errors(exc, "requests")) from None
        tm = TaskManager(connect(ctx))
        tasks = tm.submit_many_sync(requests)
        if wait_:
            tasks = tm.wait_all_sync([t.id for t in tasks], timeout_s)

        def human() -> None:
            for t in tasks:
                click.echo(f"{t.id}  {t.status.value:9}  {t.task_type:10}  {t.name}")

        emit(as_json, [t.model_dump(mode="json") for t in tasks], human)
        if wait_ and any(t.status is not TaskStatus.COMPLETED for t in tasks):
            sys.exit(EXIT_FAILED)


@click.command("ls")
@click.option("--status", multiple=True,
              type=click.Choice([s.value for s in TaskStatus], case_sensitive=False))
@click.option("--type", "task_type", multiple=True)
@click.option("--owner", default=None)
@click.option("--text", default=None, help="substring of the name")
@click.option("--limit", type=int, default=50)
@click.option("--offset", type=int, default=0)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ls(ctx: click.Context, status: tuple[str, ...], task_type: tuple[str, ...],
       owner: str | None, text: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List tasks, newest first."""
    from ..api import TaskManager

    with errors(as_json):
        query = TaskQuery(status=[TaskStatus(s.upper()) for s in status] or None,
                          task_type=list(task_type) or None, owner=owner, text=text,
                          limit=limit, offset=offset)
        page = TaskManager(connect(ctx)).list_tasks_sync(query)

        def human() -> None:
            click.echo(f"{'ID':32}  {'STATUS':9}  {'PRI':6}  {'TYPE':12}  {'TRY':3}  "
                       f"{'START':8}  {'FINISH':8}  NAME")
            for t in page.items:
                click.echo(f"{t.id:32}  {t.status.value:9}  {t.priority.name:6}  "
                           f"{t.task_type:12}  {t.attempt:3}  {_clock(t.predicted_start):8}  "
                           f"{_clock(t.predicted_finish):8}  {t.name}")
            total = "more than 1,000" if page.total is None else page.total
            click.echo(f"{len(page.items)} of {total}")

        emit(as_json, page.model_dump(mode="json"), human)


def _local_time(text: str | None) -> datetime | None:
    """An ISO time from the command line; without an offset, in this machine's zone.

    Raises:
        InvalidParametersError: not an ISO time.
    """
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParametersError([{"field": "deadline", "reason": "not an ISO time, e.g. "
                                       "2026-12-08T09:00+08:00"}]) from None
    return at if at.tzinfo is not None else at.astimezone()


def _print_task(task: Task, attempts: list[AttemptInfo] | None = None,
                lineage: bool = False) -> None:
    """One task for people: a line per field, then its attempts, error and result if it
    has them, and its lineage (in full with ``lineage``)."""
    retries = max(0, task.attempt - task.preemptions)
    preempted = f", preempted {task.preemptions} time(s)" if task.preemptions else ""
    click.echo(f"id        {task.id}\nname      {task.name}\ntype      {task.task_type}\n"
               f"status    {task.status.value}\npriority  {task.priority.name}\n"
               f"attempt   {task.attempt} ({retries} of {task.max_retries} retries used"
               f"{preempted})\n"
               f"created   {task.created_at}\nstarted   {task.started_at}\n"
               f"finished  {task.finished_at}")
    if task.cached_from:
        click.echo(f"cached    the result of {task.cached_from} (nothing ran)")
    if task.cpu_s is not None:
        peak = f", peak memory {task.peak_rss_bytes / 2**20:.0f} MiB" \
            if task.peak_rss_bytes else ""
        limit = f" (limit {task.max_cpu_s:g} s)" if task.max_cpu_s is not None else ""
        click.echo(f"used      {task.cpu_s:.3f} CPU s{limit}{peak}")
    for a in attempts or []:
        ran = f" after {a.run_s:.1f} s" if a.run_s is not None else ""
        why = f" ({a.reason})" if a.reason and a.reason != a.outcome else ""
        click.echo(f"  attempt {a.attempt}: {a.outcome}{why}{ran}, {a.reported_at:%H:%M:%S}")
    if task.error:
        click.echo(f"error     {task.error.reason}: {task.error.type}: {task.error.message}")
    if task.result is not None:
        click.echo("result    " + json.dumps(task.result, ensure_ascii=False)[:2000])
    if task.lineage and lineage:
        from ..lineage import describe

        click.echo("lineage")
        for line in describe(task.lineage):
            click.echo("  " + line)
    elif task.lineage:
        click.echo(f"lineage   recorded: raytasks show {task.id} --lineage")


@click.command()
@click.argument("task_id")
@click.option("--lineage", "with_lineage", is_flag=True,
              help="what its result came from: code, parameters, seeds, libraries, the "
                   "bars read and the models used, each with its fingerprint")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, task_id: str, with_lineage: bool, as_json: bool) -> None:
    """Show one task."""
    from ..api import TaskManager

    with errors(as_json):
        tm = TaskManager(connect(ctx))
        task = tm.get_task_sync(task_id)
        attempts = tm.attempts_sync(task_id)
        emit(as_json, {**task.model_dump(mode="json"),
                       "attempts": [a.model_dump(mode="json") for a in attempts]},
             lambda: _print_task(task, attempts, with_lineage))


@click.command()
@click.argument("task_id")
@click.option("--interval", type=float, default=0.2, help="seconds between updates")
@click.pass_context
def watch(ctx: click.Context, task_id: str, interval: float) -> None:
    """Follow a task's progress with a live bar until it finishes."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..api import ProgressTracker, TaskManager

    with errors(False):
        rt = connect(ctx)
        tracker, tm = ProgressTracker(rt), TaskManager(rt)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                      TextColumn("{task.fields[message]}")) as bar:
            row = bar.add_task(task_id[:12], total=1.0, message="")
            while True:
                p = tracker.get_progress_sync(task_id)
                eta = "" if p.status.finished else \
                    f" (finish ~{_clock(tm.explain_sync(task_id).predicted_finish)})"
                bar.update(row, completed=p.percentage,
                           message=f"{p.status.value}{eta} {p.message}")
                if p.status.finished:
                    break
                time.sleep(interval)
        task = tm.get_task_sync(task_id)
        _print_task(task)
        if task.status is not TaskStatus.COMPLETED:
            sys.exit(EXIT_FAILED)


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def explain(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Why a task waits (or runs), and when it should start and finish."""
    from ..api import TaskManager

    with errors(as_json):
        said = TaskManager(connect(ctx)).explain_sync(task_id)

        def human() -> None:
            click.echo(f"{said.task_id}: {said.status.value}")
            for reason in said.reasons:
                click.echo(f"  - {reason}")
            if said.estimate_s is not None:
                error = f", estimates of its kind off by {said.estimate_error:.0%} (median)" \
                    if said.estimate_error is not None else ""
                click.echo(f"  runs about {said.estimate_s:.1f} s{error}")
            for label, at in (("starts", said.predicted_start),
                              ("finishes", said.predicted_finish),
                              ("deadline", said.deadline)):
                if at is not None:
                    click.echo(f"  {label:9} {at.astimezone():%Y-%m-%d %H:%M:%S %Z}")

        emit(as_json, said.model_dump(mode="json"), human)


def _clock(at: datetime | None) -> str:
    """A predicted time, local, to the second ("" when none is told)."""
    return "" if at is None else f"{at.astimezone():%H:%M:%S}"


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cancel(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Cancel a task (pending: at once; running: cooperatively, then by force)."""
    _act(ctx, as_json, lambda tm: tm.cancel_task_sync(task_id),
         lambda t: f"{t.id} {t.status.value}" + (" (stop requested)" if t.cancel_requested
                                                  else ""))


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def retry(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Run a FAILED or CANCELLED task again."""
    _act(ctx, as_json, lambda tm: tm.retry_task_sync(task_id),
         lambda t: f"{t.id} {t.status.value} attempt {t.attempt}")


@click.command()
@click.argument("task_id")
@click.option("--verify", is_flag=True, help="wait for the re-run and compare its result "
              "with the original's, field by field, within the type's tolerance")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="seconds to wait, with --verify")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rerun(ctx: click.Context, task_id: str, verify: bool, timeout_s: float | None,
          as_json: bool) -> None:
    """Run a COMPLETED task again on the same inputs; with --verify, say whether it
    reproduced its result (exit 0) or what differs and which input changed (exit 1)."""
    from ..api import TaskManager
    from ..reproduce import rerun_request

    with errors(as_json):
        tm = TaskManager(connect(ctx))
        if not verify:
            task = tm.submit_sync(rerun_request(tm.get_task_sync(task_id)))
            emit(as_json, task.model_dump(mode="json"),
                 lambda: click.echo(f"{task.id} {task.status.value} (re-run of {task_id})"))
            return
        verdict = tm.rerun_sync(task_id, timeout_s)
        emit(as_json, verdict.model_dump(mode="json"), lambda: click.echo(verdict.text()))
        if not verdict.reproduced:
            sys.exit(1)


def _act(ctx: click.Context, as_json: bool, action: Callable[[Any], Task],
         line: Callable[[Task], str]) -> None:
    """Do ``action`` on a :class:`TaskManager` and print the task it returns as ``line``."""
    from ..api import TaskManager

    with errors(as_json):
        task = action(TaskManager(connect(ctx)))
        emit(as_json, task.model_dump(mode="json"), lambda: click.echo(line(task)))


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Queue depths by priority, task counts by status, executors."""
    from ..api import TaskExecutionEngine, TaskManager

    with errors(as_json):
        rt = connect(ctx)
        figures = TaskManager(rt).stats_sync()
        figures["executors"] = TaskExecutionEngine(rt).executors_sync()

        def human() -> None:
            click.echo("tasks: " + ", ".join(f"{k} {v}" for k, v in
                                             sorted(figures["status_counts"].items())))
            for q in figures["queues"]:
                click.echo(f"queue {q['queue']}: waiting " + ", ".join(
                    f"{k} {v}" for k, v in q["waiting"].items())
                    + f"; delayed {q['delayed']}; leased {q['leased']}; "
                      f"oldest {q['oldest_wait_s']:.1f} s")
            for e in figures["executors"]:
                click.echo(f"executor {e['executor_id']}: pid {e.get('pid')} "
                           f"running {e.get('current')} completed {e.get('completed')}")

        emit(as_json, figures, human)
