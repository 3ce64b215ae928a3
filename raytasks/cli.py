"""The ``raytasks`` command line: a thin layer over the client facades.

Exit codes: 0 success, 1 the task failed or was cancelled, 2 bad usage or
invalid input, 3 unknown id, 4 queue full, 5 timed out waiting, 6 not connected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from .errors import (
    InvalidParametersError,
    NotConnectedError,
    PayloadTooLargeError,
    QueueFullError,
    RaytasksError,
    TaskNotFoundError,
    UnknownTaskTypeError,
    WaitTimeoutError,
)
from .models import Task, TaskCreateRequest, TaskPriority, TaskQuery, TaskStatus

EXIT_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_FULL, EXIT_TIMEOUT, EXIT_OFFLINE = 1, 2, 3, 4, \
    5, 6


def _exit_code(exc: RaytasksError) -> int:
    if isinstance(exc, TaskNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, QueueFullError):
        return EXIT_FULL
    if isinstance(exc, WaitTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, NotConnectedError):
        return EXIT_OFFLINE
    if isinstance(exc, InvalidParametersError | UnknownTaskTypeError | PayloadTooLargeError):
        return EXIT_INVALID
    return EXIT_FAILED


@contextmanager
def _errors(as_json: bool) -> Iterator[None]:
    try:
        yield
    except RaytasksError as exc:
        if as_json:
            click.echo(json.dumps({"error": type(exc).__name__, "message": str(exc),
                                   **_jsonable(exc.data)}))
        else:
            click.echo(f"error: {exc}", err=True)
        sys.exit(_exit_code(exc))


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str))


def _connect(ctx: click.Context, **overrides: Any) -> Any:
    """Join the cluster the user means (:func:`raytasks.runtime.clusters.choose_cluster`:
    --embedded, --address/RAYTASKS_ADDRESS/RAY_ADDRESS, the cluster `raytasks up`
    recorded, else an embedded Ray without Ray's dashboard unless ``ray_dashboard=True``
    is passed), saying on stderr which one and why.

    A cluster that cannot be joined is a :class:`NotConnectedError` (exit 6) within
    seconds, saying why, which cluster it was and how to choose another.
    """
    from .runtime import connect
    from .runtime.clusters import choose_cluster
    from .settings import Settings

    settings = Settings(**overrides)
    choice = choose_cluster(settings, address=ctx.obj.get("address"),
                            address_source=ctx.obj.get("address_source", "--address"),
                            embedded=ctx.obj.get("embedded", False))
    if choice.embedded and "ray_dashboard" not in overrides:
        settings = Settings(**{**overrides, "ray_dashboard": False})  # a one-off command
    click.echo(f"raytasks: using {choice.describe()}", err=True)
    try:
        return connect(choice.address, settings=settings)
    except NotConnectedError as exc:
        raise choice.refused(exc) from None


def _emit(as_json: bool, payload: Any, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(payload, default=str))
    else:
        human()


@click.group()
@click.option("--address", envvar="RAYTASKS_ADDRESS", default=None,
              help="Ray address: auto, host:6379, ray://host:10001; default RAY_ADDRESS, "
                   "else the cluster `raytasks up` recorded, else an embedded Ray")
@click.option("--embedded", is_flag=True, help="an embedded Ray of this command's own, "
                                               "whatever address is set")
@click.pass_context
def cli(ctx: click.Context, address: str | None, embedded: bool) -> None:
    """raytasks: durable, prioritised task management on Ray."""
    ctx.ensure_object(dict)
    ctx.obj["address"] = address
    from_env = ctx.get_parameter_source("address") == click.core.ParameterSource.ENVIRONMENT
    ctx.obj["address_source"] = "RAYTASKS_ADDRESS" if from_env else "--address"
    ctx.obj["embedded"] = embedded


@cli.command()
@click.option("--head/--no-head", default=True,
              help="start a Ray head on this machine when no cluster is named or recorded")
@click.pass_context
def up(ctx: click.Context, head: bool) -> None:
    """Bring the raytasks actors up on a Ray cluster, and record it for later commands.

    The cluster is the one named (--address, RAYTASKS_ADDRESS, RAY_ADDRESS) or recorded
    by an earlier ``up``; with neither it runs ``ray start --head`` (a token made first if
    there is none; token auth, Ray's dashboard and Jobs API, a Ray client server).
    """
    import ray

    from .runtime import connect
    from .runtime.clusters import choose_cluster, record_cluster, start_head
    from .settings import Settings

    if ctx.obj.get("embedded"):
        raise click.UsageError("`raytasks up` brings raytasks up on a cluster that outlives "
                               "the command; an embedded Ray would end with it")
    settings = Settings(ray_dashboard=True)
    with _errors(False):
        choice = choose_cluster(settings, address=ctx.obj.get("address"),
                                address_source=ctx.obj.get("address_source", "--address"))
        if choice.embedded:
            if not head:
                raise NotConnectedError(f"no cluster to bring raytasks up on: {choice.source}; "
                                        "name one with --address, or drop --no-head",
                                        reason="no_cluster")
            choice = start_head()
        click.echo(f"raytasks: using {choice.describe()}", err=True)
        try:
            rt = connect(choice.address, settings=settings)
        except NotConnectedError as exc:
            raise choice.refused(exc) from None
        assert rt.connection is not None  # this process had not joined Ray before
        recorded = record_cluster(settings, rt.connection)
    click.echo(f"raytasks is up in namespace {rt.settings.namespace!r} "
               f"(store {rt.settings.store_url}, Ray {choice.address}, node "
               f"{ray.get_runtime_context().get_node_id()[:12]}); later commands join this "
               f"cluster (recorded in {recorded})")


@cli.command()
@click.option("--stop-ray", is_flag=True, help="also `ray stop` the local cluster")
@click.pass_context
def down(ctx: click.Context, stop_ray: bool) -> None:
    """Stop the raytasks actors (tasks stay in the store)."""
    rt = _connect(ctx)
    rt.shutdown()
    click.echo("raytasks actors stopped; the store keeps every task")
    if stop_ray:
        subprocess.run([_ray_bin(), "stop"], check=False)


def _ray_bin() -> str:
    """The ``ray`` command of this interpreter's environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.path.exists(beside) else "ray"


def _parse_params(params: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(params_json) if params_json else {}
    for item in params:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@cli.command()
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
@click.option("--wait", "wait_", is_flag=True, help="wait for the task and print it")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit(ctx: click.Context, task_type: str, name: str | None, params: tuple[str, ...],
           params_json: str | None, priority: str, queue: str, timeout_s: float | None,
           max_retries: int | None, depends_on: tuple[str, ...], idempotency_key: str | None,
           tags: tuple[str, ...], wait_: bool, as_json: bool) -> None:
    """Create and queue a task of TASK_TYPE."""
    from pydantic import ValidationError

    from .api import TaskManager

    try:
        request = TaskCreateRequest(
            name=name or task_type, task_type=task_type,
            parameters=_parse_params(params, params_json), priority=TaskPriority[priority.upper()],
            queue=queue, timeout_s=timeout_s, max_retries=max_retries,
            depends_on=list(depends_on), idempotency_key=idempotency_key, tags=list(tags))
    except ValidationError as exc:
        from .registry import validation_errors

        with _errors(as_json):
            raise InvalidParametersError(validation_errors(exc)) from None
        return
    with _errors(as_json):
        tm = TaskManager(_connect(ctx))
        task = tm.submit_sync(request)
        if wait_:
            task = tm.wait_sync(task.id)
        _emit(as_json, task.model_dump(mode="json"), lambda: _print_task(task))
        if wait_ and task.status is not TaskStatus.COMPLETED:
            sys.exit(EXIT_FAILED)


@cli.command("submit-many")
@click.argument("file", type=click.File("r"))
@click.option("--wait", "wait_", is_flag=True, help="wait for every task")
@click.option("--timeout", "timeout_s", type=float, default=None, help="seconds, with --wait")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def submit_many(ctx: click.Context, file: Any, wait_: bool, timeout_s: float | None,
                as_json: bool) -> None:
    """Create and queue every request in FILE (a JSON list; - for standard input)."""
    from pydantic import TypeAdapter, ValidationError

    from .api import TaskManager
    from .registry import validation_errors

    with _errors(as_json):
        try:
            requests = TypeAdapter(list[TaskCreateRequest]).validate_json(file.read())
        except ValidationError as exc:
            raise InvalidParametersError(validation_errors(exc, "requests")) from None
        tm = TaskManager(_connect(ctx))
        tasks = tm.submit_many_sync(requests)
        if wait_:
            tasks = tm.wait_all_sync([t.id for t in tasks], timeout_s)

        def human() -> None:
            for t in tasks:
                click.echo(f"{t.id}  {t.status.value:9}  {t.task_type:10}  {t.name}")

        _emit(as_json, [t.model_dump(mode="json") for t in tasks], human)
        if wait_ and any(t.status is not TaskStatus.COMPLETED for t in tasks):
            sys.exit(EXIT_FAILED)


@cli.command("ls")
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
    from .api import TaskManager

    with _errors(as_json):
        query = TaskQuery(status=[TaskStatus(s.upper()) for s in status] or None,
                          task_type=list(task_type) or None, owner=owner, text=text,
                          limit=limit, offset=offset)
        page = TaskManager(_connect(ctx)).list_tasks_sync(query)

        def human() -> None:
            click.echo(f"{'ID':32}  {'STATUS':9}  {'PRI':6}  {'TYPE':12}  {'TRY':3}  NAME")
            for t in page.items:
                click.echo(f"{t.id:32}  {t.status.value:9}  {t.priority.name:6}  "
                           f"{t.task_type:12}  {t.attempt:3}  {t.name}")
            total = "more than 1,000" if page.total is None else page.total
            click.echo(f"{len(page.items)} of {total}")

        _emit(as_json, page.model_dump(mode="json"), human)


def _print_task(task: Task) -> None:
    click.echo(f"id        {task.id}\nname      {task.name}\ntype      {task.task_type}\n"
               f"status    {task.status.value}\npriority  {task.priority.name}\n"
               f"attempt   {task.attempt} of {task.max_retries + 1}\n"
               f"created   {task.created_at}\nstarted   {task.started_at}\n"
               f"finished  {task.finished_at}")
    if task.error:
        click.echo(f"error     {task.error.reason}: {task.error.type}: {task.error.message}")
    if task.result is not None:
        click.echo("result    " + json.dumps(task.result, ensure_ascii=False)[:2000])


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show one task."""
    from .api import TaskManager

    with _errors(as_json):
        task = TaskManager(_connect(ctx)).get_task_sync(task_id)
        _emit(as_json, task.model_dump(mode="json"), lambda: _print_task(task))


@cli.command()
@click.argument("task_id")
@click.option("--interval", type=float, default=0.2, help="seconds between updates")
@click.pass_context
def watch(ctx: click.Context, task_id: str, interval: float) -> None:
    """Follow a task's progress with a live bar until it finishes."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .api import ProgressTracker, TaskManager

    with _errors(False):
        rt = _connect(ctx)
        tracker, tm = ProgressTracker(rt), TaskManager(rt)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                      TextColumn("{task.fields[message]}")) as bar:
            row = bar.add_task(task_id[:12], total=1.0, message="")
            while True:
                p = tracker.get_progress_sync(task_id)
                bar.update(row, completed=p.percentage, message=f"{p.status.value} {p.message}")
                if p.status.finished:
                    break
                time.sleep(interval)
        task = tm.get_task_sync(task_id)
        _print_task(task)
        if task.status is not TaskStatus.COMPLETED:
            sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cancel(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Cancel a task (pending: at once; running: cooperatively, then by force)."""
    _act(ctx, as_json, lambda tm: tm.cancel_task_sync(task_id),
         lambda t: f"{t.id} {t.status.value}" + (" (stop requested)" if t.cancel_requested
                                                  else ""))


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def retry(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Run a FAILED or CANCELLED task again."""
    _act(ctx, as_json, lambda tm: tm.retry_task_sync(task_id),
         lambda t: f"{t.id} {t.status.value} attempt {t.attempt}")


def _act(ctx: click.Context, as_json: bool, action: Callable[[Any], Task],
         line: Callable[[Task], str]) -> None:
    from .api import TaskManager

    with _errors(as_json):
        task = action(TaskManager(_connect(ctx)))
        _emit(as_json, task.model_dump(mode="json"), lambda: click.echo(line(task)))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Queue depths by priority, task counts by status, executors."""
    from .api import TaskExecutionEngine, TaskManager

    with _errors(as_json):
        rt = _connect(ctx)
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

        _emit(as_json, figures, human)


@cli.command()
@click.option("--host", default=None, help="default api.host from the settings")
@click.option("--port", type=int, default=None, help="default api.port from the settings")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API, the WebSocket stream, /metrics and the dashboard."""
    import uvicorn

    from . import tokens
    from .server.app import create_app

    with _errors(False):
        rt = _connect(ctx)
    host, port = host or rt.settings.api.host, port or rt.settings.api.port
    # the server reads the token file on every request (raytasks.tokens.api_tokens), so a
    # token made or revoked here or by `raytasks token` counts at once
    first = tokens.ensure_first_admin(rt.settings)
    if first is not None:
        url = f"http://{host}:{port}/"
        click.echo(
            "No API token was configured, so one was made for the owner 'admin' (role\n"
            "admin). It is shown this once: only its SHA-256 digest is kept, in\n"
            f"{tokens.token_file(rt.settings)}.\n\n"
            f"    Token:      {first}\n"
            f"    Dashboard:  {url}  (sign in with the token)\n"
            f"    Login URL:  {url}#token={first}\n\n"
            "More tokens: raytasks token create --owner NAME; list and revoke them with "
            "raytasks token list|revoke.")
    uvicorn.run(create_app(rt), host=host, port=port, log_level="warning")


@cli.group(invoke_without_command=True)
@click.option("--tasks", type=int, default=5000, help="no-op tasks per path")
@click.option("--samples", type=int, default=200, help="latency samples")
@click.option("--workers", type=int, default=2)
@click.option("--celery", is_flag=True, help="also Celery + Redis, same run (pip install "
                                             "celery redis; redis-server)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench(ctx: click.Context, tasks: int, samples: int, workers: int, celery: bool,
          as_json: bool) -> None:
    """Every path a user feels (batch, single submits, waits, latency, priority), each
    beside bare Ray in the same run.

    ``raytasks bench store|footprint|backtest|volatility`` measure the rest.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .benchmarks.core import format_core, run_core

    figures = run_core(tasks=tasks, samples=samples, workers=workers, celery=celery)
    _emit(as_json, figures, lambda: click.echo(format_core(figures)))


@bench.command("store")
@click.option("--store-url", default=None, help="default: a fresh SQLite file")
@click.option("--finished", type=int, default=1_000_000)
@click.option("--pending", type=int, default=100_000)
@click.option("--json", "as_json", is_flag=True)
def bench_store(store_url: str | None, finished: int, pending: int, as_json: bool) -> None:
    """A store of a million tasks: list pages, stats, memory per queued task, reconcile."""
    from .benchmarks.store import format_store, run_store

    figures = run_store(store_url, finished, pending)
    _emit(as_json, figures, lambda: click.echo(format_store(figures)))


@bench.command("footprint")
@click.option("--idle-timeout", "idle_timeout_s", type=float, default=10.0)
@click.option("--json", "as_json", is_flag=True)
def bench_footprint(idle_timeout_s: float, as_json: bool) -> None:
    """Memory (PSS) of an idle raytasks beside an idle bare Ray, same run."""
    from .benchmarks.footprint import format_footprint, run_footprint

    figures = run_footprint(idle_timeout_s)
    _emit(as_json, figures, lambda: click.echo(format_footprint(figures)))


@bench.command("backtest")
@click.option("--fasts", type=int, default=20, help="fast SMA windows (2, 4, ...)")
@click.option("--slows", type=int, default=40, help="slow SMA windows (10, 20, ...)")
@click.option("--json", "as_json", is_flag=True)
def bench_backtest(fasts: int, slows: int, as_json: bool) -> None:
    """SMA parameter sweep over ~2,700 bars: backtests/s, 1 vs 2 workers, vs a naive loop."""
    from .benchmarks.quant import format_backtest, run_backtest

    figures = run_backtest(fasts=fasts, slows=slows)
    _emit(as_json, figures, lambda: click.echo(format_backtest(figures)))


@bench.command("volatility")
@click.option("--stocks", type=int, default=300, help="stocks in the batch fan-out")
@click.option("--json", "as_json", is_flag=True)
def bench_volatility(stocks: int, as_json: bool) -> None:
    """GARCH fit time beside plain scipy and arch (same run), and a batch over many stocks."""
    from .benchmarks.quant import format_volatility, run_volatility

    figures = run_volatility(stocks=stocks)
    _emit(as_json, figures, lambda: click.echo(format_volatility(figures)))


def _register_operations() -> None:
    from .cli_ops import logs, schedule

    cli.add_command(schedule)
    cli.add_command(logs)


_register_operations()


def main() -> None:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from . import cli_admin

    cli.add_command(cli_admin.report)
    cli.add_command(cli_admin.token)
    cli(obj={})


if __name__ == "__main__":
    main()
