"""The ``raytasks.cli`` package: every command on the in-process group, no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import click
from click.testing import CliRunner

import raytasks.cli
from raytasks.cli import cli

COMMANDS = {"up", "down", "serve", "submit", "submit-many", "ls", "show", "watch", "cancel",
            "retry", "stats", "schedule", "logs", "report", "token", "bench", "explain"}
SUBCOMMANDS = {"schedule": {"add", "ls", "pause", "resume", "rm", "next"},
               "token": {"create", "list", "revoke"},
               "bench": {"store", "footprint", "backtest", "volatility", "units", "cold",
                         "nightly", "endurance", "flood"}}


def test_the_imported_group_has_every_command_without_main() -> None:
    # Given the group as a program imports it (main() never ran)
    # When its commands and its help are read
    result = CliRunner().invoke(cli, ["--help"])

    # Then every command is there, report and token included
    assert set(cli.commands) >= COMMANDS
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output, name
    for group, names in SUBCOMMANDS.items():
        command = cli.commands[group]
        assert isinstance(command, click.Group)
        assert set(command.commands) >= names, group


def test_command_modules_import_only_common_from_the_package() -> None:
    # Given the package's modules
    package = Path(raytasks.cli.__file__).parent
    modules = {p.stem: ast.parse(p.read_text()) for p in package.glob("*.py")}
    assert {"common", "cluster", "tasks", "ops", "admin", "bench"} <= set(modules)

    # When the imports from within the package (``from .x import``) are collected
    def siblings(tree: ast.Module) -> set[str]:
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        return found

    # Then common imports none, and each command module imports common alone
    assert siblings(modules["common"]) == set()
    for name, tree in modules.items():
        if name not in {"__init__", "__main__", "common"}:
            assert siblings(tree) <= {"common"}, name


def test_a_bad_deadline_is_refused_before_anything_starts() -> None:
    # Given deadlines that are not ISO times, or out of range
    for text in ("nonsense", "1800-01-01T00:00", "2026-13-01T00:00", "x" * 5000):
        # When submitted from the command line
        result = CliRunner().invoke(cli, ["submit", "prediction", "--deadline", text, "--json"])
        # Then it is a clear usage error naming the field (no Ray is started)
        assert result.exit_code == 2, (text, result.output)
        assert '"field": "deadline"' in result.output
