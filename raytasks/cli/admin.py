"""``raytasks report`` (an HTML research report of finished tasks) and ``raytasks token``
(API tokens for the HTTP server and dashboard, kept as digests under ``data_dir``)."""

from __future__ import annotations

import json
import sys
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
@click.option("--json", "as_json", is_flag=True)
def token_create(owner: str, role: str, as_json: bool) -> None:
    """Make a token for OWNER and show it once."""
    from .. import tokens
    from ..settings import Settings

    with errors(as_json):
        secret, record = tokens.create(Settings(), owner, "admin" if role == "admin" else "user")
        emit(as_json, {"token": secret, "id": record.id, "owner": record.owner,
                       "role": record.role},
             lambda: click.echo(f"{secret}\n(id {record.id}, owner {record.owner}, role "
                                f"{record.role}; shown once, only its digest is kept)"))


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
             "source": "token file"} for r in tokens.load(settings)]
        rows += [{"id": t.sha256[:10], "owner": t.owner, "role": t.role, "created_at": None,
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
    """Remove tokens from the token file (a running server stops accepting them once it
    re-reads the file)."""
    from .. import tokens
    from ..settings import Settings

    if owner is None and token_id is None:
        click.echo("error: name the tokens to revoke: --owner NAME or --id ID", err=True)
        sys.exit(EXIT_INVALID)
    with errors(as_json):
        gone = tokens.revoke(Settings(), owner=owner, token_id=token_id)
        emit(as_json, [r.id for r in gone],
             lambda: click.echo(json.dumps([r.id for r in gone]) if gone else
                                "no such token in the token file"))
        if not gone:
            sys.exit(EXIT_NOT_FOUND)
