"""Engine and session factory. One place decides connection options per dialect."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.security.redaction import register_secret
from bulkchange.store import lengths
from bulkchange.store.write_lock import WRITE_LOCK, current_work


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``. SQLite gets WAL, a busy timeout and its parent folder created.

    SQLite allows one writer at a time; WAL plus a generous busy timeout lets a worker, a callback
    receiver and the CLI share the file without "database is locked" errors.

    Every engine hides bound parameters from its error messages (``hide_parameters``): a failed INSERT of a
    credential row would otherwise print the plaintext password in ``[parameters: …]``, and errors end up
    in logs and on terminals. Server databases get ``pool_pre_ping`` (a connection the server dropped during
    an outage is replaced, not handed out) and a connect timeout, so a loop waiting out an unreachable
    server is never stuck in one connection attempt.
    """
    kwargs.setdefault("hide_parameters", True)
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_LOCK_WAIT_S)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # On a file not yet in WAL mode, another connection's open write transaction (a worker
            # migrating a fresh database while another starts) makes this fail at once, without SQLite's
            # busy handler: retried like BEGIN IMMEDIATE. Once any connection has switched, it is a no-op.
            run_when_unlocked(dbapi_conn, "PRAGMA journal_mode=WAL")
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_WAIT_S * 1000)}")
            cursor.close()
            # Let SQLAlchemy, not the driver, open transactions (see _sqlite_begin).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # SQLite has no row locks (SELECT … FOR UPDATE is a no-op), so a read-then-write transaction
            # could act on rows another thread changed meanwhile. BEGIN IMMEDIATE takes the write lock
            # at the start: transactions run one after another, which is what SQLite does with writers
            # anyway, and every read-modify-write in the engine gets the guarantee PostgreSQL's row locks give.
            # A session made by ``read_only_session`` only reads: a plain BEGIN, a WAL snapshot that neither
            # waits for the write lock nor holds it.
            if conn.get_execution_options().get(_READ_ONLY):
                conn.connection.driver_connection.execute("BEGIN")
                return
            asked = time.perf_counter()
            begin_immediate(conn.connection.driver_connection)
            began = time.perf_counter()
            work = current_work()
            WRITE_LOCK.began(work, began - asked)
            conn.info[_HOLDING] = (work, began)

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _sqlite_end(conn: Any) -> None:
            holding = conn.info.pop(_HOLDING, None)
            if holding is not None:
                WRITE_LOCK.ended(holding[0], time.perf_counter() - holding[1])

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        kwargs["connect_args"] = connect_args
    try:
        return create_engine(parsed, **kwargs)
    except ImportError as exc:  # the URL's driver (DBAPI module) is not installed
        raise DatabaseUrlError(
            f"the database URL's driver {parsed.drivername!r} is not installed ({exc}); install it, or name "
            "an installed one (postgresql+psycopg://…, with the postgres extra)"
        ) from None


class DatabaseUrlError(ValueError):
    """A database URL that cannot be used; the message says why and never repeats the URL (it may hold a
    password)."""


_URL_EXAMPLES = "e.g. sqlite:////home/me/bulkchange.sqlite3 or postgresql+psycopg://user:password@host:5432/name"


def parse_database_url(url: str) -> URL:
    """``url`` parsed, its dialect known; ``DatabaseUrlError`` otherwise. Its password is registered with the
    redaction layer, so it never appears in a log line."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except sa_exc.NoSuchModuleError:
        scheme = url.split(":", 1)[0][:40]
        raise DatabaseUrlError(
            f"the database URL names an unknown database or driver {scheme!r} ({_URL_EXAMPLES})"
        ) from None
    except (sa_exc.ArgumentError, ValueError, TypeError):
        raise DatabaseUrlError(f"the database URL cannot be parsed ({_URL_EXAMPLES})") from None
    if parsed.password:
        register_secret(str(parsed.password))
    return parsed


CONNECT_TIMEOUT_S = 10
"""Seconds a PostgreSQL connection attempt may take (a host that drops packets instead of refusing)."""

# SQLSTATE classes a server reports when the connection, not the statement, failed: 08 connection
# exception; 57P operator intervention (shut down, crashed, starting up, "cannot connect now").
_CONNECTION_SQLSTATES = ("08", "57P")


def ping(db: Engine) -> None:
    """One ``SELECT 1`` on a fresh connection (the readiness probe); raises whatever the database raises."""
    with db.connect() as conn:
        conn.execute(text("SELECT 1"))


def is_connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says the database could not be reached.

    That is an outage to wait out, not a bug: the server is down, restarting or unreachable, or dropped
    the connection (SQLAlchemy marks those ``connection_invalidated``). A statement the server refused
    (a constraint, a deadlock, a syntax error) is not one, and neither is anything SQLite says: a local file
    has no connection to lose.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _lost(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _lost(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # the pool could not hand out a working connection
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or isinstance(exc.orig, sqlite3.Error):
        return False
    # The driver's own error: without a SQLSTATE the client failed to connect or lost the socket (the
    # server never answered); with one, only the connection classes count.
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    args = getattr(exc.orig, "args", ())
    if state is None and args and isinstance(args[0], str) and len(args[0]) == 5:
        state = args[0]  # pyodbc: args = (SQLSTATE, message)
    return state is None or str(state).startswith(_CONNECTION_SQLSTATES)


SQLITE_LOCK_WAIT_S = 30.0
"""How long a SQLite transaction waits for the write lock before "database is locked"."""


def run_when_unlocked(dbapi_conn: sqlite3.Connection, sql: str, wait_s: float = SQLITE_LOCK_WAIT_S) -> None:
    """Run ``sql``, retried every millisecond or two while SQLite answers "database is locked", up to
    ``wait_s``; then the same error."""
    deadline = time.monotonic() + wait_s
    pause = 0.0005
    while True:
        try:
            dbapi_conn.execute(sql)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause * (0.5 + random.random()))
        pause = min(0.002, pause * 2)


def begin_immediate(dbapi_conn: sqlite3.Connection, wait_s: float = SQLITE_LOCK_WAIT_S) -> None:
    """``BEGIN IMMEDIATE``, retried every millisecond or two while another connection holds the write lock.

    SQLite's own busy handler backs off to 100 ms sleeps, so a worker waiting behind a callback receiver
    (another process) slept through the many short moments the lock was free and took it only by luck.
    Here the busy timeout is off for this one statement and the wait is ours: short, jittered polls up to
    ``wait_s``, then the same "database is locked" error as before.
    """
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        run_when_unlocked(dbapi_conn, "BEGIN IMMEDIATE", wait_s)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")


_READ_ONLY = "bulkchange_read_only"
_HOLDING = "bulkchange_write_lock"  # connection info: (work, when the lock was taken) while a transaction holds it


def db_engine(factory: sessionmaker[Session]) -> Engine:
    """The engine ``factory``'s sessions are bound to: for a write that is one Core statement (a receiver's
    group commit), where an ORM session's own bookkeeping would cost as much as the statement."""
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError(f"the session factory is bound to {bind!r}, not to one engine")
    return bind


def read_only_session(factory: sessionmaker[Session]) -> Session:
    """A session for reads only (a probe, a count, a status) that must not queue for SQLite's write lock.

    Every SQLite transaction begins IMMEDIATE (see ``make_engine``), reads included, so a worker's "is
    anything due?" would wait behind each of a callback receiver's write transactions, and hold the
    receiver up in turn.
    This session's transaction is a plain BEGIN on SQLite (WAL: it reads a consistent snapshot while a
    writer works); on other databases it is an ordinary session. Do not write through it: on SQLite a write
    would have to upgrade the lock mid-transaction, which is what BEGIN IMMEDIATE exists to avoid.
    """
    bind = factory.kw.get("bind")
    return factory(bind=read_only(bind)) if isinstance(bind, Engine) else factory()


def read_only(engine: Engine) -> Engine:
    """``engine`` for reads only: on SQLite its transactions are a plain BEGIN (see ``read_only_session``); a
    view of the same engine and pool (~20 µs to make; not cached: a cache would keep every engine alive)."""
    return engine.execution_options(**{_READ_ONLY: True}) if engine.dialect.name == "sqlite" else engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (the engine reads rows after committing intent), and
    refuse text too long for its column before sending it (``store.lengths``)."""
    factory = sessionmaker(engine, expire_on_commit=False)
    lengths.install(factory)
    return factory
