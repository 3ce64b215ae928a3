"""The nightly research batch, a Ray job: sync the universe, retrain, predict, backtest, report.

Submit it to a cluster with Ray's Jobs API (the RayJob in deploy/kuberay/ does the same)::

    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 \\
        --working-dir deploy/jobs -- python nightly.py --universe 000001.SZ,600000.SH

Inside a job Ray sets ``RAY_ADDRESS``; ``raytasks.connect()`` joins that cluster (and
brings the raytasks actors up if nobody did), so the steps run on the cluster's executor
pools and are stored like any other task. The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import raytasks
from raytasks import TaskCreateRequest, TaskManager, TaskPriority
from raytasks.models import Task, TaskStatus
from raytasks.report import write as write_report


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--universe", default="000001.SZ,600000.SH,300750.SZ",
                        help="comma-separated stock codes")
    parser.add_argument("--start", default="2019-01-01", help="first day of history")
    parser.add_argument("--model", default="ridge", choices=["ridge", "random_forest", "gbrt"])
    parser.add_argument("--top-k", type=int, default=2, help="stocks the portfolio holds")
    parser.add_argument("--report", default=None,
                        help="where to write the report (default <data_dir>/reports/"
                             "nightly-<date>.html)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per step")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = arguments(argv)
    codes = [c.strip() for c in args.universe.split(",") if c.strip()]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    started = time.monotonic()
    runtime = raytasks.connect()
    tm = TaskManager(runtime)

    def step(title: str, task_type: str, depends_on: list[str] | None = None,
             **parameters: Any) -> Task:
        return tm.submit_sync(TaskCreateRequest(
            name=f"nightly {day}: {title}", task_type=task_type, parameters=parameters,
            priority=TaskPriority.HIGH, depends_on=depends_on or [],
            tags=["nightly", day]))

    def finish(tasks: list[Task]) -> list[Task]:
        done = tm.wait_all_sync([t.id for t in tasks], timeout_s=args.timeout)
        failed = [t for t in done if t.status is not TaskStatus.COMPLETED]
        if failed:
            for t in failed:
                print(f"{t.name}: {t.status.value} {t.error}", file=sys.stderr)
            raise SystemExit(1)
        return done

    print(f"nightly batch {day}: {len(codes)} stocks on {runtime.connection}")
    sync = step("sync bars", "data", kind="sync", codes=codes, start=args.start)
    train = step(f"train {args.model}", "training", depends_on=[sync.id], kind="train",
                 model=args.model, codes=codes, start=args.start, name=f"nightly-{args.model}")
    sync, train = finish([sync, train])
    model_id = train.result["model_id"]
    print(f"synced {sync.result['rows_written']} bars; model {model_id}")

    predict = step("forecast the universe", "prediction", kind="batch", codes=codes,
                   stock_code=codes[0], model_id=model_id, start=args.start)
    backtests = [step(f"backtest {code} on the model's signal", "backtest", kind="strategy",
                      strategy="model", model_id=model_id, stock_code=code, start=args.start)
                 for code in codes]
    portfolio = step(f"top-{args.top_k} portfolio", "backtest", kind="portfolio",
                     strategy="model", model_id=model_id, codes=codes,
                     top_k=min(args.top_k, len(codes)), start=args.start)
    predict, *backtests, portfolio = finish([predict, *backtests, portfolio])

    every = [sync, train, predict, *backtests, portfolio]
    path = Path(args.report) if args.report else \
        Path(runtime.settings.data_dir) / "reports" / f"nightly-{day}.html"
    report = write_report(every, path, title=f"nightly research batch {day}")
    summary = {
        "day": day, "model_id": model_id, "report": str(report),
        "tasks": {t.name: t.id for t in every},
        "ranking": predict.result["ranking"],
        "backtests": {t.result["stock_code"]: round(t.result["total_return"], 4)
                      for t in backtests},
        "portfolio_return": round(portfolio.result["total_return"], 4),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    finally:
        # leave Ray before the interpreter exits: a client thread still waiting on the
        # manager then stops cleanly instead of ending the process with status 1
        import ray

        ray.shutdown()
    sys.exit(code)
