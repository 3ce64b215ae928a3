"""Bringing raytasks up and down on a Ray cluster, and serving it over HTTP:
``raytasks up``, ``raytasks down`` and ``raytasks serve``."""

from __future__ import annotations

import os
import subprocess
import sys

import click

from ..errors import NotConnectedError
from .common import connect, errors


@click.command()
@click.option("--head/--no-head", default=True,
              help="start a Ray head on this machine when no cluster is named or recorded")
@click.pass_context
def up(ctx: click.Context, head: bool) -> None:
    """Bring the raytasks actors up on a Ray cluster, and record it for later commands.

    The cluster is the one named (--address, RAYTASKS_ADDRESS, RAY_ADDRESS) or recorded
    by an earlier ``up``; with neither it runs ``ray start --head`` (a token made first if
    there is none; token auth, Ray's dashboard and Jobs API, a Ray client server).
    """
    from .. import runtime
    from ..runtime.clusters import choose_cluster, record_cluster, start_head
    from ..runtime.connection import node_id
    from ..settings import Settings

    if ctx.obj.get("embedded"):
        raise click.UsageError("`raytasks up` brings raytasks up on a cluster that outlives "
                               "the command; an embedded Ray would end with it")
    settings = Settings(ray_dashboard=True)
    with errors(False):
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
            rt = runtime.connect(choice.address, settings=settings)
        except NotConnectedError as exc:
            raise choice.refused(exc) from None
        assert rt.connection is not None  # this process had not joined Ray before
        recorded = record_cluster(settings, rt.connection)
    click.echo(f"raytasks is up in namespace {rt.settings.namespace!r} "
               f"(store {rt.settings.store_url}, Ray {choice.address}, node "
               f"{node_id()[:12]}); later commands join this "
               f"cluster (recorded in {recorded})")


@click.command()
@click.option("--stop-ray", is_flag=True, help="also `ray stop` the local cluster")
@click.pass_context
def down(ctx: click.Context, stop_ray: bool) -> None:
    """Stop the raytasks actors (tasks stay in the store)."""
    rt = connect(ctx)
    rt.shutdown()
    click.echo("raytasks actors stopped; the store keeps every task")
    if stop_ray:
        subprocess.run([_ray_bin(), "stop"], check=False)


def _ray_bin() -> str:
    """The ``ray`` command of this interpreter's environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.path.exists(beside) else "ray"


@click.command()
@click.option("--host", default=None, help="default api.host from the settings")
@click.option("--port", type=int, default=None, help="default api.port from the settings")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API, the WebSocket stream, /metrics and the dashboard."""
    import uvicorn

    from .. import tokens
    from ..server.app import create_app
    from ..server.peers import uvicorn_options

    with errors(False):
        rt = connect(ctx)
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
    # forwarding headers count only from api.trusted_proxies (uvicorn's default trusts loopback)
    uvicorn.run(create_app(rt), host=host, port=port, log_level="warning",
                **uvicorn_options(rt.settings.api))
