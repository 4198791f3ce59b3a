"""Fixtures shared by every test folder: PostgreSQL databases that are fresh for each run and each test.

PostgreSQL is the server on 127.0.0.1:5432 with trust auth (``BULKCHANGE_TEST_PG_HOST`` / ``_PORT`` /
``_USER`` override it). Nothing is written into the server's existing databases:

* ``pg_url`` (session) — a database created for this test run, migrated to head, dropped at the end.
  Tests that use it share it for the run; each must work on rows it created itself.
* ``pg_empty_url`` / ``pg_migrated_url`` (per test) — a brand-new database (empty, or migrated to head),
  dropped after the test, for tests that look at the whole schema or count rows table-wide.

Every database this run creates is named ``bc_<run id>_…``; the session's end drops any that a
crashed teardown left behind. Without a reachable server the PostgreSQL tests are skipped with the
reason, except under ``CI=true`` where they fail: CI must not pass by silently testing less.

``private_pg`` (per test) is a PostgreSQL cluster of the test's own (initdb into a temporary directory, a
free port), for tests that stop and start the database under running processes; it never touches the
shared server. Without initdb it is skipped with the reason (a failure under ``CI=true``).

The SQLite counterparts stay in the folders' own conftest files (each folder wants its file in a
different place); only the server-side plumbing is shared here.
"""

from __future__ import annotations

import gc
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet

from bulkchange.logging_setup import configure_logging

# Credentials are encrypted at rest (bulkchange.security.crypto): one key for the whole run, inherited by
# every worker process a test starts whatever its working directory (never ./var/secret.keys).
os.environ.setdefault("BULKCHANGE_SECRET_KEYS", Fernet.generate_key().decode("ascii"))

# pytest-xdist's worker processes (`make test`) start with COLUMNS=80 and LINES=24 in their environment. The
# CLI's Rich consoles are made when its modules are imported and would keep that width for good, whatever
# COLUMNS a test then gives CliRunner (tables cut to 80 columns); a serial run has neither variable.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


def pytest_configure(config: pytest.Config) -> None:
    """Logging set up as every entry point sets it up (``cli``, the Lambda handlers), before any test.

    Unconfigured, structlog renders an exception with Rich, every frame's locals included, and without the
    redaction processor: a test that logged an exception (a database down) then took seconds to answer and
    timed out on a slow machine — or passed, when an earlier test had happened to configure logging.
    """
    configure_logging("INFO")


PG_HOST = os.environ.get("BULKCHANGE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BULKCHANGE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BULKCHANGE_TEST_PG_USER", "postgres")


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    """Entry points run in-process here (the CLI worker, the Lambda handler) freeze the start-up heap and
    raise the collector's threshold (``bulkchange.heap``); the next test gets the collector as it was."""
    threshold = gc.get_threshold()
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
    gc.set_threshold(*threshold)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _admin_connect() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=3
    )


@dataclass
class PgServer:
    """The reachable server and this run's database names (``bc_<run>_<n>``)."""

    run: str
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    def create(self, suffix: str | None = None) -> str:
        """Create an empty database; return its name."""
        name = f"bc_{self.run}_{suffix or next(self._numbers)}"
        with _admin_connect() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, name: str) -> None:
        # FORCE ends connections a test left open (an undisposed pool), so teardown never hangs.
        with _admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def leftovers(self) -> list[str]:
        with _admin_connect() as admin:
            rows = admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"bc\\_{self.run}\\_%",)
            ).fetchall()
        return [str(row[0]) for row in rows]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server, or a skip (a failure under ``CI=true``) when it cannot be reached."""
    try:
        with _admin_connect():
            pass
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {PG_USER}@{PG_HOST}:{PG_PORT}: {exc}".strip()
        if in_ci():
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    server = PgServer(run=secrets.token_hex(4))
    yield server
    for name in server.leftovers():
        server.drop(name)


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """This run's own PostgreSQL database, migrated to head; dropped when the session ends."""
    from bulkchange.store.migrate import upgrade

    name = pg_server.create("run")
    try:
        upgrade(pg_server.url(name))
        yield pg_server.url(name)
    finally:
        pg_server.drop(name)


@pytest.fixture
def pg_empty_url(pg_server: PgServer) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (never migrated), dropped after the test."""
    name = pg_server.create()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop(name)


@pytest.fixture
def pg_migrated_url(pg_empty_url: str) -> str:
    """A brand-new PostgreSQL database migrated to head with ``upgrade()``, dropped after the test."""
    from bulkchange.store.migrate import upgrade

    upgrade(pg_empty_url)
    return pg_empty_url


# ------------------------------------------------------------------------ a private cluster to break


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of the test's own on a free loopback port, to stop and start at will.

    Outage tests stop the database under running processes; the shared server on 5432 must never be the
    one stopped. ``stop`` is ``pg_ctl stop -m immediate`` (a crash: connections are cut, nothing is flushed
    politely), ``start`` brings it back on the same port and data directory (it recovers from the crash).
    """

    bin_dir: Path
    root: Path
    port: int
    run_as: tuple[str, ...]  # ("runuser", "-u", "postgres", "--") when the tests run as root
    user: str = "postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str, timeout_s: float = 60) -> None:
        command = [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-3000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}\n{log}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")

    def is_running(self) -> bool:
        command = [*self.run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"]
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0

    def create_database(self, name: str) -> str:
        """A new database in this cluster; its SQLAlchemy URL."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: ``BULKCHANGE_TEST_PG_BIN``, Debian's versioned dirs, else the PATH."""
    candidates: list[Path] = []
    if os.environ.get("BULKCHANGE_TEST_PG_BIN"):
        candidates.append(Path(os.environ["BULKCHANGE_TEST_PG_BIN"]))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def _skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the outage tests must run)")
    pytest.skip(reason)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private, running PostgreSQL cluster (``PrivatePostgres``), removed after the test.

    Skipped with the reason when initdb is not installed (or, as root, there is no ``postgres`` user to run
    it as); under ``CI=true`` that is a failure instead.
    """
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        _skip_or_fail("initdb / pg_ctl not found (install PostgreSQL's server package or set BULKCHANGE_TEST_PG_BIN)")
    assert bin_dir is not None
    run_as: tuple[str, ...] = ()
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _skip_or_fail("running as root and there is no postgres user to run initdb as")
        run_as = ("runuser", "-u", "postgres", "--")
    # Not under pytest's tmp_path: its parents are private to the test user, and the cluster's user must reach it.
    root = Path(tempfile.mkdtemp(prefix="bc-pg-"))
    if run_as:
        os.chown(root, account.pw_uid, account.pw_gid)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cluster = PrivatePostgres(bin_dir=bin_dir, root=root, port=port, run_as=run_as)
    try:
        subprocess.run(
            [*run_as, str(bin_dir / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres", "-N"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        cluster.start()
        yield cluster
    finally:
        if cluster.data.exists() and cluster.is_running():
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
