"""``raytasks bench``: the benchmarks a user can run, each beside a reference in the same run."""

from __future__ import annotations

import click

from .common import emit


@click.group(invoke_without_command=True)
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

    ``raytasks bench store|footprint|cold|backtest|volatility|units|nightly|endurance|flood|``
    ``lineage``
    measure the rest.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..benchmarks.core import format_core, run_core

    figures = run_core(tasks=tasks, samples=samples, workers=workers, celery=celery)
    emit(as_json, figures, lambda: click.echo(format_core(figures)))


@bench.command("store")
@click.option("--store-url", default=None, help="default: a fresh SQLite file")
@click.option("--finished", type=int, default=1_000_000)
@click.option("--pending", type=int, default=100_000)
@click.option("--json", "as_json", is_flag=True)
def bench_store(store_url: str | None, finished: int, pending: int, as_json: bool) -> None:
    """A store of a million tasks: list pages, stats, memory per queued task, reconcile."""
    from ..benchmarks.store import format_store, run_store

    figures = run_store(store_url, finished, pending)
    emit(as_json, figures, lambda: click.echo(format_store(figures)))


@bench.command("lineage")
@click.option("--tasks", type=int, default=5000, help="no-op tasks on the batch path")
@click.option("--json", "as_json", is_flag=True)
def bench_lineage(tasks: int, as_json: bool) -> None:
    """What recording lineage costs a no-op task (executor, transport, store), beside the
    CPU the whole task costs, same run."""
    from ..benchmarks.lineage import format_lineage, run_lineage

    figures = run_lineage(tasks)
    emit(as_json, figures, lambda: click.echo(format_lineage(figures)))


@bench.command("footprint")
@click.option("--idle-timeout", "idle_timeout_s", type=float, default=10.0)
@click.option("--json", "as_json", is_flag=True)
def bench_footprint(idle_timeout_s: float, as_json: bool) -> None:
    """Memory (PSS) of an idle raytasks beside an idle bare Ray, same run."""
    from ..benchmarks.footprint import format_footprint, run_footprint

    figures = run_footprint(idle_timeout_s)
    emit(as_json, figures, lambda: click.echo(format_footprint(figures)))


@bench.command("cold")
@click.option("--tasks", type=int, default=5, help="predictions submitted together")
@click.option("--json", "as_json", is_flag=True)
def bench_cold(tasks: int, as_json: bool) -> None:
    """Tasks submitted together on an idle raytasks: wait to start and to finish from empty
    pools (warm_workers=0) beside the default warm pools, same run."""
    from ..benchmarks.cold import format_cold, run_cold

    figures = run_cold(tasks=tasks)
    emit(as_json, figures, lambda: click.echo(format_cold(figures)))


@bench.command("backtest")
@click.option("--fasts", type=int, default=20, help="fast SMA windows (2, 4, ...)")
@click.option("--slows", type=int, default=40, help="slow SMA windows (10, 20, ...)")
@click.option("--json", "as_json", is_flag=True)
def bench_backtest(fasts: int, slows: int, as_json: bool) -> None:
    """SMA parameter sweep over ~2,700 bars: backtests/s, 1 vs 2 workers, vs a naive loop."""
    from ..benchmarks.quant import format_backtest, run_backtest

    figures = run_backtest(fasts=fasts, slows=slows)
    emit(as_json, figures, lambda: click.echo(format_backtest(figures)))


@bench.command("volatility")
@click.option("--stocks", type=int, default=300, help="stocks in the batch fan-out")
@click.option("--json", "as_json", is_flag=True)
def bench_volatility(stocks: int, as_json: bool) -> None:
    """GARCH fit time beside plain scipy and arch (same run), and a batch over many stocks."""
    from ..benchmarks.quant import format_volatility, run_volatility

    figures = run_volatility(stocks=stocks)
    emit(as_json, figures, lambda: click.echo(format_volatility(figures)))


@bench.command("units")
@click.option("--json", "as_json", is_flag=True)
def bench_units(as_json: bool) -> None:
    """CPU seconds per work unit for each kind of built-in task (the quota's calibration)."""
    from ..benchmarks.units import format_units, run_units

    figures = run_units()
    emit(as_json, figures, lambda: click.echo(format_units(figures)))


@bench.command("nightly")
@click.option("--trainers", type=int, default=2, help="trainer executors")
@click.option("--low-epochs", type=int, default=600, help="epochs of each LOW run")
@click.option("--high-tasks", type=int, default=4, help="HIGH retrainings in the batch")
@click.option("--high-epochs", type=int, default=8, help="epochs of each HIGH retraining")
@click.option("--rows", type=int, default=150_000, help="rows of the feature matrix")
@click.option("--deadline", "deadline_s", type=float, default=45.0,
              help="seconds from the batch's arrival to its deadline")
@click.option("--grace", "grace_s", type=float, default=10.0, help="preemption grace (s)")
@click.option("--json", "as_json", is_flag=True)
def bench_nightly(trainers: int, low_epochs: int, high_tasks: int, high_epochs: int,
                  rows: int, deadline_s: float, grace_s: float, as_json: bool) -> None:
    """The nightly batch (HIGH, with a deadline) against trainers held by LOW training:
    with preemption and without, same run."""
    from ..benchmarks.nightly import format_nightly, run_nightly

    figures = run_nightly(trainers, low_epochs, high_tasks, high_epochs, rows, deadline_s,
                          grace_s)
    emit(as_json, figures, lambda: click.echo(format_nightly(figures)))


@bench.command("endurance")
@click.option("--tasks", type=int, default=1_000_000, help="no-op tasks through the system")
@click.option("--retention", "retention_s", type=float, default=30.0,
              help="task_retention_s and event_retention_s of the run (s)")
@click.option("--window", type=int, default=20_000, help="most tasks unfinished at once")
@click.option("--points", type=int, default=20, help="points of the memory curve")
@click.option("--workers", type=int, default=2, help="executors")
@click.option("--store-url", default=None, help="default: a fresh SQLite file")
@click.option("--json", "as_json", is_flag=True)
def bench_endurance(tasks: int, retention_s: float, window: int, points: int, workers: int,
                    store_url: str | None, as_json: bool) -> None:
    """The long run: N tasks with retention on; the RSS of the manager, tracker, notifier
    and engine along the way (the end against the first 10 %) and the store's size."""
    from ..benchmarks.endurance import format_endurance, format_point, run_endurance

    figures = run_endurance(tasks=tasks, retention_s=retention_s, window=window,
                            points=points, workers=workers, store_url=store_url,
                            echo=None if as_json else
                            (lambda p: click.echo(format_point(p), err=True)))
    emit(as_json, figures, lambda: click.echo(format_endurance(figures)))


@bench.command("flood")
@click.option("--tasks", type=int, default=1_000_000, help="tasks the owner's loop submits")
@click.option("--max-queue-size", type=int, default=100_000)
@click.option("--chunk", type=int, default=100, help="tasks per call of the loops (1: one "
              "submit per task)")
@click.option("--http-seconds", type=float, default=20.0, help="how long bob floods HTTP")
@click.option("--no-http", is_flag=True, help="only the client loops")
@click.option("--http-only", is_flag=True, help="only the HTTP flood")
@click.option("--creates-per-s", type=float, default=None,
              help="api.max_creates_per_s of the run (default: the setting's default)")
@click.option("--reads-per-s", type=float, default=None,
              help="api.max_reads_per_s of the run (default: the setting's default)")
@click.option("--json", "as_json", is_flag=True)
def bench_flood(tasks: int, max_queue_size: int, chunk: int, http_seconds: float,
                no_http: bool, http_only: bool, creates_per_s: float | None,
                reads_per_s: float | None, as_json: bool) -> None:
    """Floods: an HTTP client at full speed (another owner's p99 quiet and under it), and
    client loops far past max_queue_size (refusals, memory, another owner served)."""
    from ..benchmarks.flood import format_flood, run_flood

    figures = run_flood(tasks=tasks, max_queue_size=max_queue_size, chunk=chunk,
                        http_seconds=http_seconds, http=not no_http, loops=not http_only,
                        creates_per_s=creates_per_s, reads_per_s=reads_per_s)
    emit(as_json, figures, lambda: click.echo(format_flood(figures)))
