"""``make demo``: the main job on an embedded local Ray.

Runs the DESIGN.md public-API snippet, registers a custom task type, then
pushes tasks of every priority and every family through the system while a
live table shows their status and progress, and ends with a summary.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from . import (
    ProgressTracker,
    Settings,
    TaskCreateRequest,
    TaskExecutionContext,
    TaskExecutionEngine,
    TaskManager,
    TaskPriority,
    TaskQueueManager,
    TaskStatus,
    connect,
    register_task_type,
)
from .report import write as write_report
from .tracking import tracking_uri

console = Console()


class SpinParams(BaseModel):
    seconds: float = Field(gt=0, le=60)
    fail_first: bool = False


def spin(params: SpinParams, ctx: TaskExecutionContext) -> dict[str, Any]:
    """Busy work in small steps, reporting progress; optionally fails its first attempt."""
    if params.fail_first and ctx.attempt == 0:
        raise RuntimeError("transient failure (the demo retries it)")
    steps = 20
    for i in range(steps):
        ctx.check_cancelled()
        deadline = time.time() + params.seconds / steps
        while time.time() < deadline:
            pass
        ctx.report_progress((i + 1) / steps, f"step {i + 1}/{steps}")
    return {"spun": params.seconds, "attempt": ctx.attempt}


async def design_snippet() -> str:
    task_manager = TaskManager()
    task = await task_manager.create_task(TaskCreateRequest(
        name="股票预测任务", task_type="prediction",
        parameters={"stock_code": "000001.SZ", "days": 5}))
    await TaskQueueManager().submit_task(task.id, priority=TaskPriority.HIGH)
    result = await TaskExecutionEngine().execute_task(task.id)
    progress = await ProgressTracker().get_progress(task.id)
    console.print(f"  task {task.id[:12]} → {progress.status.value}, "
                  f"{progress.percentage:.0%}: {result['stock_code']} in {result['horizon_days']}"
                  f" days: {result['last_close']} → {result['predicted_price']} "
                  f"(out-of-sample RMSE {result['quality']['rmse']:.4f} vs naive "
                  f"{result['quality']['rmse_naive']:.4f})")
    return task.id


def _table(rows: list[Any], progress: dict[str, Any]) -> Table:
    table = Table(title="raytasks demo: live", expand=False)
    for col in ("task", "type", "priority", "status", "try", "progress", "message"):
        table.add_column(col)
    colour = {"PENDING": "yellow", "RUNNING": "cyan", "COMPLETED": "green",
              "FAILED": "red", "CANCELLED": "magenta"}
    for t in rows:
        p = progress.get(t.id)
        pct = 1.0 if t.status is TaskStatus.COMPLETED else (p.percentage if p else 0.0)
        table.add_row(t.name, t.task_type, t.priority.name,
                      f"[{colour[t.status.value]}]{t.status.value}[/]", str(t.attempt),
                      ProgressBar(total=1.0, completed=pct, width=20),
                      (p.message if p else "")[:28])
    return table


def main() -> None:
    data_dir = tempfile.mkdtemp(prefix="raytasks-demo-")
    console.rule("[bold]raytasks demo")
    console.print(f"starting an embedded local Ray; store and artifacts in {data_dir}")
    rt = connect(settings=Settings(namespace="raytasks-demo", data_dir=data_dir,
                                   retry_backoff_base_s=0.5))
    if rt.connection is not None and rt.connection.dashboard_url:
        console.print(f"Ray's own dashboard and Jobs API: {rt.connection.dashboard_url} "
                      f"(Ray started in {rt.connection.join_s:.1f} s)")
    console.print("1. the DESIGN.md public-API snippet")
    snippet_id = asyncio.run(design_snippet())

    console.print("2. a custom task type registered from this client: 'spin'")
    register_task_type("spin", spin, params_model=SpinParams, timeout_s=60, max_retries=2,
                       workers=1)

    tm, tracker = TaskManager(), ProgressTracker()
    # wait for the new pool's executor process, so queueing (not start-up) decides the order
    tm.wait_sync(tm.submit_sync(TaskCreateRequest(name="warm-up", task_type="spin",
                                                  parameters={"seconds": 0.05})).id)
    requests = []
    for i, priority in enumerate([TaskPriority.LOW] * 3 + [TaskPriority.MEDIUM] * 3
                                 + [TaskPriority.HIGH] * 3):
        requests.append(TaskCreateRequest(
            name=f"spin-{priority.name.lower()}-{i}", task_type="spin", priority=priority,
            parameters={"seconds": 0.8, "fail_first": i == 4}))
    # the model registry and bar store are the settings' named defaults, under data_dir
    families: list[tuple[str, dict[str, Any]]] = [
                ("prediction", {"stock_code": "600000.SH", "days": 10, "kind": "volatility"}),
                ("backtest", {"kind": "optimize", "stock_code": "000001.SZ"}),
                ("backtest", {"kind": "strategy", "stock_code": "000001.SZ", "fast": 10,
                              "slow": 60}),
                ("training", {"kind": "train"}),
                ("data", {"kind": "sync", "codes": ["000001.SZ", "300750.SZ"]})]
    for family, params in families:
        requests.append(TaskCreateRequest(name=f"{family}-{params['kind']}", task_type=family,
                                          parameters=params, priority=TaskPriority.MEDIUM))
    console.print(f"3. {len(requests)} tasks of every priority (LOW queued first) and family")
    started = time.time()
    tasks = tm.submit_many_sync(requests)
    doomed = tm.submit_sync(TaskCreateRequest(name="spin-cancelled", task_type="spin",
                                              priority=TaskPriority.LOW,
                                              parameters={"seconds": 5}))
    ids = [t.id for t in tasks] + [doomed.id]
    cancelled = False
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            rows = [tm.get_task_sync(i) for i in ids]
            progress = {t.id: tracker.get_progress_sync(t.id) for t in rows
                        if t.status is TaskStatus.RUNNING}
            live.update(_table(rows, progress))
            if not cancelled and any(t.status is TaskStatus.RUNNING for t in rows):
                tm.cancel_task_sync(doomed.id)
                cancelled = True
            if all(t.status.finished for t in rows):
                break
            time.sleep(0.15)

    _summary(rows)
    _prediction_error(rt.settings.store_url, started)
    research = [tm.get_task_sync(snippet_id)] + [
        tm.get_task_sync(t.id) for t in rows
        if t.task_type in ("prediction", "backtest", "training", "data")
        and t.status is TaskStatus.COMPLETED]
    path = write_report(research, Path(data_dir) / "report.html",
                        title="raytasks demo: research report")
    console.print(f"[bold]research report:[/] {path}")
    if rt.settings.mlflow_tracking:
        uri = tracking_uri(rt.settings)
        console.print(f"[bold]MLflow runs[/] of the research tasks: {uri} (open them with "
                      f"`mlflow ui --backend-store-uri {uri}`)")
    backtest = next((t for t in research if t.task_type == "backtest"
                     and (t.result or {}).get("kind") == "strategy"), None)
    if backtest is not None:  # the same as `raytasks rerun ID --verify`
        console.print(f"re-run of backtest {backtest.id[:12]} on the same inputs: "
                      f"{tm.rerun_sync(backtest.id, timeout_s=600).text()}")
    rt.shutdown()


def _prediction_error(store_url: str | None, since: float) -> None:
    """How good the run-time predictions (the ETAs) were: the median absolute percentage
    error of the attempts whose kind had run before (a first run's is a guess)."""
    from .store import open_store

    assert store_url is not None
    store = open_store(store_url)
    try:
        rows = store.estimate_errors(since)
    finally:
        store.close()
    if rows:
        errors = [abs(predicted - actual) / actual for _t, predicted, actual in rows]
        console.print(f"run-time predictions (ETAs): median error "
                      f"{100 * statistics.median(errors):.0f} % over {len(errors)} attempts "
                      "of kinds run before")


def _summary(rows: list[Any]) -> None:
    table = Table(title="summary")
    for col in ("priority", "tasks", "completed", "failed", "cancelled", "mean wait s",
                "mean run s", "retries"):
        table.add_column(col, justify="right")
    for priority in TaskPriority:
        mine = [t for t in rows if t.priority is priority]
        if not mine:
            continue
        started = [t for t in mine if t.started_at]
        wait = [(t.started_at - t.created_at).total_seconds() for t in started]
        run = [(t.finished_at - t.started_at).total_seconds() for t in started if t.finished_at]
        table.add_row(priority.name, str(len(mine)),
                      str(sum(t.status is TaskStatus.COMPLETED for t in mine)),
                      str(sum(t.status is TaskStatus.FAILED for t in mine)),
                      str(sum(t.status is TaskStatus.CANCELLED for t in mine)),
                      f"{statistics.fmean(wait):.2f}" if wait else "-",
                      f"{statistics.fmean(run):.2f}" if run else "-",
                      str(sum(t.attempt for t in mine)))
    console.print(table)
    ok = sum(t.status is TaskStatus.COMPLETED for t in rows)
    waits = {p: [(t.started_at - t.created_at).total_seconds() for t in rows
                 if t.task_type == "spin" and t.priority is p and t.started_at]
             for p in TaskPriority}
    order = " < ".join(f"{p.name} {statistics.fmean(w):.1f} s" for p, w in
                       sorted(waits.items(), key=lambda kv: statistics.fmean(kv[1]))
                       if w)
    console.print(f"[bold]{ok} of {len(rows)} tasks completed; one retried after a failure, "
                  f"one was cancelled. Mean wait of the spin tasks by priority: {order}.")
    for t in rows:
        if t.status is TaskStatus.COMPLETED and t.task_type in ("prediction", "backtest",
                                                                "training", "data"):
            console.print(f"  {t.task_type:10} {_headline(t.result)}")


def _headline(result: dict[str, Any]) -> str:
    kind = result.get("kind")
    if kind == "volatility":
        q = result["quality"]
        return (f"{result['stock_code']} {result['model']} annualised vol "
                f"{result['annualized_vol']:.1%}; out-of-sample QLIKE {q['qlike']:.3f} vs "
                f"naive {q['qlike_naive']:.3f}")
    if kind == "optimize":
        b = result["best"]
        return (f"{result['combinations']} SMA pairs; best fast={b['fast']} slow={b['slow']} "
                f"Sharpe {b['sharpe']:.2f}")
    if kind == "strategy":
        return (f"{result['stock_code']} {result['strategy']}: total return "
                f"{result['total_return']:.1%} vs buy and hold "
                f"{result['benchmark_total_return']:.1%}, Sharpe {result['risk']['sharpe']:.2f}")
    if kind == "train":
        m = result["metrics"]
        return (f"model {result['model_id']}: out-of-sample RMSE {m['rmse']:.4f} vs naive "
                f"{m['rmse_naive']:.4f}, rank IC {m['rank_ic']:.3f}")
    if kind == "sync":
        return f"{result['rows_written']} bars stored in {result['store']}"
    return str(kind)


if __name__ == "__main__":
    main()
