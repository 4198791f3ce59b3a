"""Database errors never carry the values that caused them, and text too long for its column is refused
with a readable message before anything is sent; a lost connection is told apart from a refused statement."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from bulkchange.security.crypto import encrypt, max_plaintext_bytes
from bulkchange.store.db import is_connection_lost, make_engine, make_session_factory
from bulkchange.store.lengths import ValueTooLong, check_lengths
from bulkchange.store.migrate import upgrade
from bulkchange.store.tables import ServiceProvider, ThingSpaceAuthentication

CLIENT_ID = "client-id-that-is-private-7731"


def test_a_failed_statement_does_not_show_its_parameters(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    sessions = make_session_factory(engine)
    try:
        with pytest.raises(sa_exc.IntegrityError) as caught, sessions.begin() as session:
            # No such service provider: the foreign key refuses the row (with every value as a parameter).
            session.add(_auth(service_provider_id=987654, client_id=CLIENT_ID))
        message = str(caught.value)
        assert CLIENT_ID not in message
        assert "parameters hidden" in message
    finally:
        engine.dispose()


def _auth(**values: object) -> ThingSpaceAuthentication:
    fields = {
        "service_provider_id": 1,
        "base_url": "https://example.test",
        "auth_token_url": "https://example.test/t",
        "auth_url": "https://example.test/l",
        "client_id": "client",
        "client_secret": "secret-value",
        "username": "user",
        "password": "password-value",
        "account_number": "1",
        **values,
    }
    return ThingSpaceAuthentication(**fields)


def test_lengths_are_checked_against_the_columns_secrets_on_their_encrypted_form() -> None:
    check_lengths(_auth())  # fits
    with pytest.raises(ValueTooLong, match="client id is longer than 200 characters") as caught:
        check_lengths(_auth(client_id="c" * 201))
    assert "ccccc" not in str(caught.value)
    fits = max_plaintext_bytes(500)
    assert len(encrypt("p" * fits)) <= 500 < len(encrypt("p" * (fits + 16)))
    check_lengths(_auth(password="p" * fits))
    with pytest.raises(ValueTooLong, match="password is too long to store") as caught:
        check_lengths(_auth(password="p" * (fits + 1)))
    assert "ppppp" not in str(caught.value) and f"at most {fits} bytes" in str(caught.value)


def test_an_orm_insert_of_a_too_long_value_is_refused_before_it_is_sent(sqlite_url: str) -> None:
    upgrade(sqlite_url)  # SQLite itself would store the whole value without a word
    engine = make_engine(sqlite_url)
    try:
        with make_session_factory(engine)() as session:
            session.add(ServiceProvider(name="n" * 201))
            with pytest.raises(ValueTooLong, match="name is longer than 200"):
                session.commit()
    finally:
        engine.dispose()


def _operational(orig: BaseException) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (_operational(psycopg.OperationalError("connection failed: Connection refused")), True),
        (_operational(psycopg.errors.AdminShutdown("terminating connection")), True),  # 57P01
        (_operational(psycopg.errors.CannotConnectNow("the database system is starting up")), True),  # 57P03
        (_operational(psycopg.errors.DeadlockDetected("deadlock detected")), False),  # 40P01: a refused statement
        (_operational(psycopg.errors.QueryCanceled("statement timeout")), False),
        (_operational(sqlite3.OperationalError("database is locked")), False),
        (_operational(sqlite3.OperationalError("no such table: X")), False),
        (sa_exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key")), False),
        (sa_exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True), True),
        (ValueError("not a database error"), False),
    ],
)
def test_a_lost_connection_is_told_apart_from_a_refused_statement(error: BaseException, lost: bool) -> None:
    assert is_connection_lost(error) is lost


def test_a_lost_connection_is_found_behind_the_error_it_caused() -> None:
    try:
        try:
            raise _operational(psycopg.OperationalError("server closed the connection unexpectedly"))
        except sa_exc.OperationalError as inner:
            raise RuntimeError("recording the outcome failed") from inner
    except RuntimeError as outer:
        assert is_connection_lost(outer)
