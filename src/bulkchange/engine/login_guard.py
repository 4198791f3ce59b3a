"""The lockout guard kept in the database, so every worker in every process honours it.

ThingSpace locks a user after 5 consecutive failed logins. After one failure we stop: no worker logs in
again until an operator fixes the credentials (``bulkchange providers unlock``), which clears the mark.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier.errors import LoginLocked
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import ThingSpaceAuthentication, utcnow


class DbLoginGuard:
    def __init__(self, session_factory: sessionmaker[Session], auth_id: int) -> None:
        self._sessions = session_factory
        self._auth_id = auth_id

    def check(self) -> None:
        with read_only_session(self._sessions) as session:
            auth = session.get(ThingSpaceAuthentication, self._auth_id)
            if auth is not None and auth.login_failed_at is not None:
                raise LoginLocked(
                    "ThingSpace login is paused after a failed attempt at "
                    f"{auth.login_failed_at:%Y-%m-%d %H:%M:%S} UTC ({auth.login_failure_message}). "
                    "Fix the credentials, then run `bulkchange providers unlock "
                    f"{auth.service_provider_id}` (ThingSpace locks the user after 5 failures).",
                    endpoint="session/login",
                )

    def record_failure(self, message: str) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(ThingSpaceAuthentication)
                .where(ThingSpaceAuthentication.id == self._auth_id)
                .values(login_failed_at=utcnow(), login_failure_message=message[:500])
            )

    def record_success(self) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(ThingSpaceAuthentication)
                .where(
                    ThingSpaceAuthentication.id == self._auth_id, ThingSpaceAuthentication.login_failed_at.is_not(None)
                )
                .values(login_failed_at=None, login_failure_message=None)
            )
