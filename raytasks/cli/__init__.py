"""The ``raytasks`` command line: a thin layer over the client facades.

Exit codes: 0 success, 1 the task failed or was cancelled, 2 bad usage or
invalid input, 3 unknown id, 4 queue full, 5 timed out waiting, 6 not connected.

The commands live in a module per concern (:mod:`.cluster`, :mod:`.tasks`, :mod:`.ops`,
:mod:`.admin`, :mod:`.bench`), each over :mod:`.common` alone; this module gathers them
into the ``cli`` group.
"""

from __future__ import annotations

import os

import click

from . import admin, bench, cluster, ops, tasks

__all__ = ["COMMANDS", "cli", "main"]

COMMANDS: tuple[click.Command, ...] = (
    cluster.up, cluster.down, cluster.serve,
    tasks.submit, tasks.submit_many, tasks.ls, tasks.show, tasks.watch, tasks.explain,
    tasks.cancel, tasks.retry, tasks.rerun, tasks.stats,
    ops.schedule, ops.logs,
    admin.report, admin.token, admin.audit,
    bench.bench,
)


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


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """The ``raytasks`` console script."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cli(obj={})
