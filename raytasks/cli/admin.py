"""``raytasks report`` (an HTML research report of finished tasks), ``raytasks token``
(API tokens for the HTTP server and dashboard, kept as digests under ``data_dir``) and
``raytasks audit`` (the store's audit trail: who did what, from where)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidParametersError
from .common import EXIT_INVALID, EXIT_NOT_FOUND, connect, emit, errors


@click.command()
@click.argument("task_ids", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="default <data_dir>/reports/<first id>.html")
@click.option("--title", default="raytasks research report")
@click.pass_context
def report(ctx: click.Context, task_ids: tuple[str, ...], output: str | None,
           title: str) -> None:
    """Write a self-contained HTML report of finished tasks and print its path.

    Figures (equity against buy and hold, drawdown, forecast against actual, the
    SMA sweep heat-map...), metrics and trades, whatever each task's result holds.
    """
    from .. import report as reports
    from ..api import TaskManager

    with errors(False):
        rt = connect(ctx)
        tm = TaskManager(rt)
        tasks = [tm.get_task_sync(task_id) for task_id in task_ids]
        running = [t for t in tasks if not t.status.finished]
        if running:
            raise InvalidParametersError([{
                "field": "task_ids", "reason": f"task {t.id} is {t.status.value}: a report "
                "needs a finished task"} for t in running])
        path = Path(output) if output else \
            Path(rt.settings.data_dir) / "reports" / f"{tasks[0].id}.html"
        click.echo(str(reports.write(tasks, path, title)))


@click.group()
def token() -> None:
    """API tokens for `raytasks serve` (stored as SHA-256 digests in <data_dir>)."""


@token.command("create")
@click.option("--owner", required=True, help="whose tasks the token sees and creates")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(["read", "submit", "admin"]),
              help="what the token may do (repeat; default: the role's, user = read and "
                   "submit, admin = all): read for dashboards and monitoring, submit to "
                   "create and change tasks and schedules")
@click.option("--task-type", "task_types", multiple=True,
              help="with submit: only this task type (repeat for more)")
@click.option("--json", "as_json", is_flag=True)
def token_create(owner: str, role: str, scopes: tuple[str, ...], task_types: tuple[str, ...],
                 as_json: bool) -> None:
    """Make a token for OWNER and show it once."""
    from .. import tokens
    from ..settings import Settings

    with errors(as_json):
        settings = Settings()
        chosen: list[tokens.Scope] = [s for s in ("read", "submit", "admin") if s in scopes]
        secret, record = tokens.create(settings, owner, "admin" if role == "admin" else "user",
                                       chosen or None, list(task_types) or None)
        _audited(tokens.audit(settings, "token.create", [record]))
        shown = ",".join(record.scopes) if record.scopes else f"role {record.role}"
        emit(as_json, {"token": secret, "id": record.id, "owner": record.owner,
                       "role": record.role, "scopes": record.scopes,
                       "task_types": record.task_types},
             lambda: click.echo(f"{secret}\n(id {record.id}, owner {record.owner}, {shown}; "
                                "shown once, only its digest is kept)"))


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    """The tokens raytasks serve accepts (never the tokens themselves: ids and owners)."""
    from .. import tokens
    from ..settings import Settings

    with errors(as_json):
        settings = Settings()
        rows: list[dict[str, Any]] = [
            {"id": r.id, "owner": r.owner, "role": r.role, "created_at": r.created_at,
             "scopes": r.scopes, "task_types": r.task_types, "source": "token file"}
            for r in tokens.load(settings)]
        rows += [{"id": t.sha256[:10], "owner": t.owner, "role": t.role, "created_at": None,
                  "scopes": t.scopes, "task_types": t.task_types,
                  "source": "settings (api.tokens)"} for t in settings.api.tokens]

        def human() -> None:
            click.echo(f"{'ID':10}  {'OWNER':20}  {'ROLE':5}  {'CREATED':25}  SOURCE")
            for r in rows:
                click.echo(f"{r['id']:10}  {r['owner']:20}  {r['role']:5}  "
                           f"{r['created_at'] or '-':25}  {r['source']}")

        emit(as_json, rows, human)


@token.command("revoke")
@click.option("--owner", default=None, help="every token of this owner")
@click.option("--id", "token_id", default=None, help="one token, by the id `list` shows")
@click.option("--json", "as_json", is_flag=True)
def token_revoke(owner: str | None, token_id: str | None, as_json: bool) -> None:
    """Remove tokens from the token file, and end their dashboard sessions (a running
    server stops accepting them with its next request)."""
    from .. import tokens
    from ..settings import Settings

    if owner is None and token_id is None:
        click.echo("error: name the tokens to revoke: --owner NAME or --id ID", err=True)
        sys.exit(EXIT_INVALID)
    with errors(as_json):
        settings = Settings()
        gone = tokens.revoke(settings, owner=owner, token_id=token_id)
        _audited(tokens.audit(settings, "token.revoke", gone))
        emit(as_json, [r.id for r in gone],
             lambda: click.echo(json.dumps([r.id for r in gone]) if gone else
                                "no such token in the token file"))
        if not gone:
            sys.exit(EXIT_NOT_FOUND)


def _audited(recorded: bool) -> None:
    if not recorded:
        click.echo("warning: the store's audit trail could not record this (see the log); "
                   "the token file is changed", err=True)


@click.command()
@click.option("--owner", default=None, help="what this owner did")
@click.option("--target-owner", default=None, help="what was done to this owner's things")
@click.option("--action", default=None, help="one action: task.create, session.open, "
                                             "token.revoke...")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="only the last HOURS hours")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit(owner: str | None, target_owner: str | None, action: str | None,
          hours: float | None, limit: int, as_json: bool) -> None:
    """The audit trail, newest first: who (owner, token id, address, request id) did what
    to whose task, schedule, token or session. Reads the store (no cluster needed)."""
    from ..settings import Settings
    from ..store.access import AccessStore

    with errors(as_json):
        settings = Settings()
        assert settings.store_url is not None
        access = AccessStore(settings.store_url, busy_timeout_s=settings.store_busy_timeout_s)
        try:
            rows = access.audit.query(owner=owner, target_owner=target_owner, action=action,
                                      since=time.time() - hours * 3600 if hours else None,
                                      limit=limit)
        finally:
            access.close()

        def human() -> None:
            click.echo(f"{'AT':20}  {'OWNER':16}  {'TOKEN':10}  {'SOURCE':15}  "
                       f"{'ACTION':17}  TARGET")
            for r in rows:
                at = datetime.fromtimestamp(r["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
                target = f"{r['target'] or '-'} ({r['target_owner'] or '-'})"
                click.echo(f"{at:20}  {r['owner']:16}  {r['token_id'] or '-':10}  "
                           f"{r['source'] or '-':15}  {r['action']:17}  {target}")

        emit(as_json, rows, human)
