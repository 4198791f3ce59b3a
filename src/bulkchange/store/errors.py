"""Which database errors mean "the database is not there right now" rather than "this statement is wrong".

A worker treats the first kind as an outage (back off, carry on when it returns) and the second as a
failure of the work at hand.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


def is_connection_error(error: BaseException) -> bool:
    """True for a lost or refused connection, a server shutting down, or a locked/unopenable database
    file — anything that a later try can get past without changing the statement. Looks through the
    exception's causes (a driver error wrapped by our own code)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError):
            return True
        current = current.__cause__ or current.__context__
    return False
