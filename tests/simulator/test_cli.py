"""The ``simulator`` CLI command registers on a Typer app and exposes the documented flags."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from bulkchange.cli.simulator_cmd import register


def test_register_adds_simulator_command_with_flags() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command forces Typer into sub-command mode, like the main CLI
        """Placeholder."""

    result = CliRunner().invoke(app, ["simulator", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    for flag in (
        "--host",
        "--port",
        "--client-id",
        "--client-secret",
        "--username",
        "--password",
        "--account",
        "--preload",
        "--activation-delay",
        "--seed",
        "--p-server-error",
        "--p-rate-limited",
        "--p-slow",
        "--slow-s",
        "--p-malformed",
        "--session-expire-every",
        "--p-callback-lost",
        "--p-callback-duplicate",
    ):
        assert flag in result.output
