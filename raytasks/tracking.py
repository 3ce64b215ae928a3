"""MLflow tracking: a run per research task, where researchers already look.

A completed prediction, backtest or training task logs one MLflow run, from the executor
that ran it, after its handler returned (on a thread of its own: the task's report does not
wait for it): the parameters after defaults (from its lineage),
every number of its result as a metric (``risk.sharpe``, ``metrics.rmse``...), its result,
lineage and equity curve (CSV) as artifacts, and the raytasks task id, type, owner, attempt
and code hash as tags. A tune's trials are child runs. A model version a training saved is
registered in MLflow's model registry under the same name, its source the raytasks
registry's version, so MLflow's UI links a run, its metrics and the model it made.

The run is found again by its task id (``raytasks.task_id`` tag): an attempt that ran after
another had logged (the first one's report lost) replaces nothing and logs no second run.
Tracking never fails a task: an error is a line in the attempt's log.

Where: ``mlflow_tracking_uri`` (a team's server, ``http://...``), by default a local
store under the data directory (``sqlite:///<data_dir>/mlflow.db``, artifacts in
``<data_dir>/mlflow-artifacts``), which ``mlflow ui --backend-store-uri`` opens.
``mlflow_tracking = false`` turns it off.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lineage import Lineage
    from .logcapture import AttemptLog
    from .messages import Lease
    from .settings import Settings

log = logging.getLogger(__name__)

#: The task types whose runs are logged (the research families; data tasks have no
#: metrics worth a run).
TRACKED = ("prediction", "backtest", "training")
EXPERIMENT = "raytasks"
MOST_METRICS = 500
TAG_MAX = 5000  # characters of the lineage kept as a tag (MLflow takes up to 8,000)
RETRY_WAITS_S = (1.0, 3.0, 10.0)  # between tries to log a run (off the task's path)


def tracking_uri(settings: Settings) -> str:
    return settings.mlflow_tracking_uri or f"sqlite:///{settings.data_dir / 'mlflow.db'}"


def tracked(settings: Settings | None, task_type: str, builtin: bool) -> bool:
    return settings is not None and settings.mlflow_tracking and builtin \
        and task_type in TRACKED


def track(settings: Settings, attempt_log: AttemptLog | None, lease: Lease, value: Any,
          lineage: Lineage) -> None:
    """Log a completed attempt as an MLflow run (:func:`log_run`), saying so in its log; a
    failure to is a line there too, never the task's failure."""
    try:
        for wait_s in (*RETRY_WAITS_S, None):
            try:
                run_id = log_run(settings, {"task_id": lease.task_id,
                                            "task_type": lease.task_type,
                                            "owner": lease.owner, "attempt": lease.attempt},
                                 value, dict(lineage))
                break
            except Exception:
                if wait_s is None:
                    raise
                time.sleep(wait_s)  # a store another process creates, or a server away
        if attempt_log is not None:
            attempt_log.add("raytasks", f"MLflow run {run_id} ({tracking_uri(settings)})")
        else:
            log.info("task %s: MLflow run %s", lease.task_id, run_id)
    except Exception as exc:
        log.warning("task %s: MLflow tracking failed: %s", lease.task_id, exc)
        if attempt_log is not None:
            attempt_log.add("raytasks", f"MLflow tracking failed: {type(exc).__name__}: "
                                        f"{str(exc)[:300]}")


def log_run(settings: Settings, task: dict[str, Any], result: Any,
            lineage: dict[str, Any]) -> str | None:
    """Log ``task``'s completed attempt (``task``: task_id, task_type, owner, attempt, name)
    as an MLflow run; its run id (the existing one if the task logged one already)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(settings))
    # the local store keeps artifacts under the data directory too (MLflow's default is
    # ./mlruns of the process: here, the executor's working directory)
    experiment = _experiment(client, None if settings.mlflow_tracking_uri else
                             (settings.data_dir / "mlflow-artifacts").as_uri())
    for found in client.search_runs([experiment],
                                    f"tags.`raytasks.task_id` = '{task['task_id']}'"):
        if found.info.status == "FINISHED":
            return str(found.info.run_id)
        client.delete_run(found.info.run_id)  # a try cut short: logged again whole
    tags = {"raytasks.task_id": task["task_id"], "raytasks.task_type": task["task_type"],
            "raytasks.owner": str(task.get("owner") or ""),
            "raytasks.attempt": str(task["attempt"]),
            "raytasks.code": str(lineage.get("code", "")),
            "raytasks.lineage": json.dumps(lineage, sort_keys=True)[:TAG_MAX],
            "mlflow.runName": f"{task['task_type']} {task.get('name') or ''}".strip()[:250]}
    run = client.create_run(experiment, tags=tags)
    run_id = run.info.run_id
    try:
        params = flatten(lineage.get("parameters") or {}, numbers_only=False)
        _log(client, run_id, params, flatten(result if isinstance(result, dict) else {}))
        client.log_text(run_id, json.dumps(result, indent=1, default=str), "result.json")
        client.log_text(run_id, json.dumps(lineage, indent=1, sort_keys=True), "lineage.json")
        if isinstance(result, dict):
            curve = _equity_csv(result)
            if curve:
                client.log_text(run_id, curve, "equity_curve.csv")
            _children(client, experiment, run_id, task, result)
            _register(client, run_id, task, result, lineage)
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    return str(run_id)


def flatten(value: Any, prefix: str = "", numbers_only: bool = True,
            depth: int = 3) -> dict[str, Any]:
    """A dict's leaves as ``a.b.c`` keys: numbers (bools and lists left out) or, with
    ``numbers_only=False``, every scalar as text."""
    out: dict[str, Any] = {}
    if not isinstance(value, dict) or depth < 0:
        return out
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(flatten(item, name + ".", numbers_only, depth - 1))
        elif isinstance(item, bool) or item is None or isinstance(item, list):
            if not numbers_only and item is not None:
                out[name] = json.dumps(item)[:500]
        elif isinstance(item, int | float):
            out[name] = float(item) if numbers_only else str(item)
        elif not numbers_only:
            out[name] = str(item)[:500]
    return out


def _experiment(client: Any, artifacts: str | None) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(EXPERIMENT, artifact_location=artifacts))
    except Exception:  # another executor created it meanwhile
        return str(client.get_experiment_by_name(EXPERIMENT).experiment_id)


def _log(client: Any, run_id: str, params: dict[str, Any], metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    finite = {k: v for k, v in metrics.items() if v == v and abs(v) != float("inf")}
    client.log_batch(run_id, metrics=[Metric(_key(k), v, now, 0) for k, v in
                                      list(finite.items())[:MOST_METRICS]],
                     params=[Param(_key(k), v) for k, v in list(params.items())[:100]])


def _key(name: str) -> str:
    """A metric or parameter name MLflow takes (letters, digits, _ - . / and spaces)."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)[:250]


def _equity_csv(result: dict[str, Any]) -> str | None:
    curve, dates = result.get("equity_curve"), result.get("equity_dates")
    if not isinstance(curve, list) or not curve:
        return None
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date", "equity"] if isinstance(dates, list) else ["step", "equity"])
    labels = dates if isinstance(dates, list) and len(dates) == len(curve) else range(len(curve))
    writer.writerows(zip(labels, curve, strict=False))
    return out.getvalue()


def _trials(result: dict[str, Any]) -> dict[int, list[tuple[int, float]]]:
    """A tune's trials: trial -> [(round, validation RMSE)], from its rounds."""
    out: dict[int, list[tuple[int, float]]] = {}
    if result.get("kind") != "tune" or not isinstance(result.get("rounds"), list):
        return out
    for step, scored in enumerate(result["rounds"]):
        for row in scored if isinstance(scored, list) else []:
            if isinstance(row, dict) and "trial" in row and "valid_rmse" in row:
                out.setdefault(int(row["trial"]), []).append((step, float(row["valid_rmse"])))
    return out


def _children(client: Any, experiment: str, parent: str, task: dict[str, Any],
              result: dict[str, Any]) -> None:
    """A child run per tune trial: its validation RMSE at each round it survived to."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    for trial, scores in sorted(_trials(result).items()):
        child = client.create_run(experiment, tags={
            "mlflow.parentRunId": parent, "raytasks.trial_of": task["task_id"],
            "mlflow.runName": f"trial {trial}"})
        client.log_batch(child.info.run_id, params=[Param("trial", str(trial))], metrics=[
            Metric("valid_rmse", rmse, now, step) for step, rmse in scores])
        client.set_terminated(child.info.run_id, "FINISHED")


def _register(client: Any, run_id: str, task: dict[str, Any], result: dict[str, Any],
              lineage: dict[str, Any]) -> None:
    """A model version the training saved, as a version of MLflow's registered model of
    the same name (its source: the raytasks registry's version)."""
    for key, used in (lineage.get("models") or {}).items():
        if used.get("role") != "saved":
            continue
        registry, _, model_id = key.partition("/")
        name = model_id.split(":")[0]
        with contextlib.suppress(Exception):  # it exists already
            client.create_registered_model(name)
        client.create_model_version(
            name, source=f"raytasks://{registry}/{model_id}", run_id=run_id,
            tags={"raytasks.model_id": model_id, "raytasks.sha256": used.get("sha256", ""),
                  "raytasks.task_id": task["task_id"]})
