"""``bulkchange aws …``: the AWS deployment seen from inside (registered by ``bulkchange.cli.main``)."""

from typing import Annotated

import typer

aws_app = typer.Typer(help="The AWS deployment (SQS, Lambda, SSM / Secrets Manager).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(aws_app, name="aws")


@aws_app.command("check")
def check(
    queue_url: Annotated[
        str | None, typer.Option("--queue-url", help="the queue to check (default DEVICE_BULK_CHANGE_QUEUE_URL)")
    ] = None,
    function_timeout: Annotated[
        int | None,
        typer.Option(
            "--function-timeout", min=1, max=900, help="the queue function's timeout, s (default its setting)"
        ),
    ] = None,
) -> None:
    """Queue reachable, dead-letter queue attached, visibility ≥ 6 × function timeout, every credential
    reference resolvable, database reachable and migrated: one line each; exit 1 if any failed."""
    from bulkchange.aws.check import run_checks  # boto3 and the AWS checks: only for this command
    from bulkchange.settings import Settings

    results = run_checks(Settings(), queue_url=queue_url, function_timeout_s=function_timeout)
    for result in results:
        typer.echo(result.line())
    failed = sum(not r.ok for r in results)
    if failed:
        typer.echo(f"{failed} check(s) failed", err=True)
        raise typer.Exit(1)
