"""OAuth access tokens, M2M session tokens and login lockout.

Semantics follow thingspace-api.md §2: one access token per hour (the same
token is handed out again during that hour with the remaining lifetime),
sessions that expire after an idle period that every use slides, and a contact
that locks after N consecutive failed logins. Guarded by the simulator lock.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import uuid
from dataclasses import dataclass, field


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, secret) of an ``Authorization: Basic …`` header; None when there is no Basic header.

    An undecodable value gives ``("", "")``: the caller tried Basic auth and it cannot match anything.
    """
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    user, _, secret = decoded.partition(":")
    return user, secret


@dataclass
class AuthState:
    """Everything the simulator must remember about credentials."""

    token_ttl_s: float
    session_idle_s: float
    lockout_after: int
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    current_token: str | None = None
    sessions: dict[str, float] = field(default_factory=dict)  # session token -> last use
    failures: dict[str, int] = field(default_factory=dict)  # username -> consecutive failures
    locked: set[str] = field(default_factory=set)
    issued: set[str] = field(default_factory=set)

    # --- access tokens -----------------------------------------------------------------------------------

    def issue_token(self, now: float) -> tuple[str, int]:
        """Return (token, expires_in); reuses the live token so repeated calls agree."""
        token = self.current_token
        if token is not None and self.tokens.get(token, 0.0) > now:
            return token, max(1, math.floor(self.tokens[token] - now))
        token = secrets.token_hex(16)
        self.tokens[token] = now + self.token_ttl_s
        self.current_token = token
        self.issued.add(token)
        return token, math.floor(self.token_ttl_s)

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)
        if self.current_token == token:
            self.current_token = None

    def token_valid(self, token: str, now: float) -> bool:
        expiry = self.tokens.get(token)
        return expiry is not None and expiry > now

    # --- sessions ----------------------------------------------------------------------------------------

    def login_allowed(self, username: str) -> bool:
        return username not in self.locked

    def record_login(self, username: str, ok: bool, now: float) -> str | None:
        """Update the failure streak; on success start and return a new session token."""
        if not ok:
            count = self.failures.get(username, 0) + 1
            self.failures[username] = count
            if count >= self.lockout_after:
                self.locked.add(username)
            return None
        self.failures[username] = 0
        session = str(uuid.uuid4())
        self.sessions[session] = now
        self.issued.add(session)
        return session

    def unlock(self, username: str) -> None:
        self.locked.discard(username)
        self.failures[username] = 0

    def touch_session(self, session: str, now: float) -> bool:
        """True (and slide the idle window) if the session is live; expired ones are dropped."""
        last = self.sessions.get(session)
        if last is None:
            return False
        if now - last >= self.session_idle_s:
            del self.sessions[session]
            return False
        self.sessions[session] = now
        return True

    def end_session(self, session: str) -> None:
        self.sessions.pop(session, None)
