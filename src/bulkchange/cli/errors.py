"""Configuration and environment errors as one readable line with the fix, never as a traceback.

A traceback of a failed ``providers add`` showed SQLAlchemy's ``[parameters: …]`` — the plaintext password
and client secret — and hundreds of lines of frames. Every command runs inside ``OneLineErrors``: an error
``explain`` recognises (a missing or malformed secret key, a value too long for its column, an unusable
database URL or an unreachable database, invalid settings, any database error) is printed as one line on
stderr, passed through the redaction layer, and the command exits non-zero. Anything else is a bug and
keeps its traceback (without local variables: a frame's locals may hold a secret).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

CONFIG_EXIT = 2
"""Exit status of a command stopped by a configuration or environment error."""

_err = Console(stderr=True, soft_wrap=True, highlight=False)


def _first_line(exc: BaseException | None) -> str:
    lines = str(exc).strip().splitlines() if exc is not None else []
    return lines[0].strip()[:400] if lines else type(exc).__name__


def explain(exc: BaseException) -> str | None:
    """One line (without any value that caused it) for a recognised error; ``None`` for anything else.

    The error types are imported here, when a command has failed, not by every ``bulkchange`` invocation."""
    import pydantic
    from sqlalchemy import exc as sa_exc

    from bulkchange.security.crypto import SecretKeyError
    from bulkchange.store.db import DatabaseUrlError, is_connection_lost
    from bulkchange.store.lengths import ValueTooLong
    from bulkchange.store.schema import SchemaNotReady

    if isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        return explain(exc.orig)  # raised while binding a value (e.g. encrypting a secret): judge the cause
    if isinstance(exc, SchemaNotReady):
        return str(exc)
    if isinstance(exc, SecretKeyError):
        return f"secret keys: {exc}"
    if isinstance(exc, ValueTooLong):
        return f"refused: {exc}"
    if isinstance(exc, DatabaseUrlError):
        return f"BULKCHANGE_DATABASE_URL: {exc}"
    if isinstance(exc, pydantic.ValidationError):
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        return f"configuration: {fields} (check the BULKCHANGE_… environment variables)"
    if is_connection_lost(exc):
        cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
        return (
            f"cannot reach the database: {_first_line(cause)} — check that it runs and that "
            "BULKCHANGE_DATABASE_URL names it (host, port, user, password)"
        )
    if isinstance(exc, sa_exc.DBAPIError):
        return f"database error ({type(exc.orig).__name__}): {_first_line(exc.orig)}"
    return None


class OneLineErrors(TyperGroup):
    """The command group every ``bulkchange`` command runs in (see the module docstring)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # Typer's own ending (--help too) and usage errors: as they are
        except Exception as exc:
            line = explain(exc)
            if line is None:  # a bug, or Typer's own Exit / Abort / usage errors: as they are
                raise
            from bulkchange.security.redaction import redact

            _err.print(f"[red]error:[/red] {escape(redact(line))}", markup=True)
            raise typer.Exit(CONFIG_EXIT) from None
