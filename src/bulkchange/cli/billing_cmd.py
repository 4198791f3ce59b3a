"""``bulkchange rerun-billing``: run failed or credential-waiting additional steps (Rev.io billing, customer
rate plan) again — one device, a selection, or every one of a bulk change (``services.billing_steps``)."""

import json
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``rerun-billing`` to the main CLI ``app``."""
    app.command("rerun-billing")(rerun_billing_cmd)


def rerun_billing_cmd(
    bulk_change_id: int,
    change: Annotated[list[int] | None, typer.Option("--change", help="only this device change (repeatable)")] = None,
    iccid: Annotated[list[str] | None, typer.Option("--iccid", help="only this device (repeatable)")] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="ERROR or WAITING_CREDENTIALS (repeatable; default: both)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the additional steps of BULK_CHANGE_ID that failed (or wait for their billing credential) again;
    the next `bulkchange worker` (or `serve --with-worker`) carries them out."""
    from bulkchange.runtime import command_runtime
    from bulkchange.services.billing_steps import NothingToRerun, rerun_billing
    from bulkchange.settings import Settings

    rt = command_runtime(Settings())
    try:
        with rt.session_factory() as session:
            result = rerun_billing(
                session, bulk_change_id, change_ids=change or (), iccids=iccid or (), statuses=status, by="cli"
            )
    except KeyError as exc:
        err.print(f"refused: {exc.args[0]}")
        raise typer.Exit(2) from None
    except (NothingToRerun, ValueError) as exc:
        err.print(f"refused: {exc}")
        raise typer.Exit(2) from None
    finally:
        rt.close()
    if as_json:
        typer.echo(json.dumps({"bulk_change_id": bulk_change_id, "rerun": result.change_ids}))
    else:
        typer.echo(
            f"{result.count} billing step(s) of bulk change {bulk_change_id} will run again; run `bulkchange worker`"
        )
