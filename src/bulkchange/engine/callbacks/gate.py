"""The one way in for a CarrierService callback, whichever receiver got it (``serve``'s route or the Lambda).

ThingSpace has no authentication of its own for callbacks: it echoes, in plain text in the body, the
username and password given when the listener was registered. So every receiver admits a callback through
a ``CallbackGate``, which refuses, in this order and with the same answer on every receiver:

* ``403`` — the caller's address is outside ``BULKCHANGE_CALLBACK_ALLOWED_SOURCES`` (checked before the
  body is read);
* ``413`` — the body is larger than ``BULKCHANGE_CALLBACK_MAX_BODY_BYTES``;
* ``400`` — the body is not UTF-8 JSON, nests deeper than ``BULKCHANGE_CALLBACK_MAX_JSON_DEPTH`` (a
  callback nests five levels; a body nested thousands deep would exhaust the parser's recursion), or is
  not a JSON object;
* ``401`` — the URL's provider does not exist, is not active, has no callback credentials, or the echoed
  username/password are not its own (both compared in constant time, always both). The answer does not say
  which: the log line does;
* ``400`` — the object is not a CarrierService callback (no requestId or no ICCID).

Credentials are per service provider (``ThingSpaceAuthentication.CallbackUsername`` /
``CallbackPassword``), so a caller holding one provider's credentials cannot post to another's URL; and
what the gate admits is stored with the URL's provider, which is the only provider whose changes it may
settle (``verification.match_callbacks``). Each provider's credentials are read from the database and
decrypted at most once per ``cache_s`` (a rotation takes effect within that time).

``check_callback_setup`` is the start-up check of every receiver: half-configured credentials, providers
without any (unless ``insecure``: loopback development only) and the retired global settings are each a
``CallbackConfigError`` with one readable line saying what to do.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bulkchange.carrier import catalogue
from bulkchange.carrier.port import CallbackReport, ReceivesCallbacks
from bulkchange.domain.carriers import CarrierName
from bulkchange.engine.accounts import SecretResolver
from bulkchange.security.crypto import reveal
from bulkchange.settings import Settings
from bulkchange.store.db import read_only_session
from bulkchange.store.tables import ServiceProvider, ThingSpaceAuthentication

log = structlog.get_logger("bulkchange.callbacks")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CallbackRefused(Exception):
    """A callback the gate does not admit: the HTTP status, the body's ``detail`` and a metric label."""

    def __init__(self, status: int, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason  # malformed | too_large | refused_source | refused_auth


class CallbackConfigError(RuntimeError):
    """A receiver must not start like this; the message is one line saying what to change."""


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """``BULKCHANGE_CALLBACK_ALLOWED_SOURCES`` as networks (a bare address is a /32 or /128)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        return tuple(ipaddress.ip_network(p, strict=False) for p in parts if p)
    except ValueError as exc:
        raise CallbackConfigError(f"BULKCHANGE_CALLBACK_ALLOWED_SOURCES: {exc}") from None


def source_allowed(host: str | None, networks: Sequence[IpNetwork]) -> bool:
    if not networks:
        return True
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in networks)


_BRACKETS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Does the JSON text nest arrays/objects deeper than ``limit``? (Brackets inside strings don't count.)

    Checked before parsing, because the parser itself recurses once per level. A body with fewer brackets
    than ``limit`` cannot be too deep: a real callback (a dozen brackets) costs one ``count`` per bracket
    kind and no scan.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for token in _BRACKETS.finditer(body):
        char = token.group()[:1]
        if char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif char in (b"]", b"}"):
            depth -= 1
    return False


def credentials_match(payload: dict[str, Any], expected: tuple[str, str]) -> bool:
    """Both fields compared in constant time, always both (no early exit that would tell which was wrong)."""
    user = payload.get("username")
    password = payload.get("password")
    user_ok = _same(user if isinstance(user, str) else None, expected[0])
    password_ok = _same(password if isinstance(password, str) else None, expected[1])
    return user_ok & password_ok


def _same(given: str | None, expected: str) -> bool:
    return hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class CallbackPolicy:
    """What every receiver enforces (from ``Settings``; ``insecure`` only from ``--insecure-callbacks``)."""

    allowed_sources: tuple[IpNetwork, ...] = ()
    max_body_bytes: int = 64 * 1024
    max_json_depth: int = 32
    insecure: bool = False  # admit callbacks of a provider without credentials (loopback development only)

    @classmethod
    def from_settings(cls, settings: Settings, *, insecure: bool = False) -> CallbackPolicy:
        return cls(
            allowed_sources=parse_networks(settings.callback_allowed_sources),
            max_body_bytes=settings.callback_max_body_bytes,
            max_json_depth=settings.callback_max_json_depth,
            insecure=insecure,
        )


@dataclass(frozen=True)
class _Provider:
    """One provider as the gate sees it: ``state`` is ok | missing | half | unknown | unreadable."""

    state: str
    expected: tuple[str, str] = ("", "")
    why: str = ""


_UNKNOWN = _Provider("unknown", why="no such active service provider with ThingSpace credentials")


class CallbackGate:
    """Admits callbacks for every receiver of one process (thread-safe; one per receiver application)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        policy: CallbackPolicy,
        *,
        resolve: SecretResolver | None = None,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        reader: ReceivesCallbacks | None = None,
    ) -> None:
        self._sessions = session_factory
        self.policy = policy
        self.reader: ReceivesCallbacks = reader or catalogue.callback_reader(CarrierName.THINGSPACE)
        self._resolve = resolve
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, _Provider]] = {}
        # Compared against when a provider has nothing to compare with, so every refusal does the same work.
        self._decoy = (secrets.token_urlsafe(16), secrets.token_urlsafe(32))

    # ------------------------------------------------------------------------------------ the checks

    def check_source(self, host: str | None, service_provider_id: int) -> None:
        if not source_allowed(host, self.policy.allowed_sources):
            log.warning("callback refused: source not allowed", source=host, service_provider_id=service_provider_id)
            raise CallbackRefused(403, "source address not allowed", "refused_source")

    def check_size(self, size: int) -> None:
        if size > self.policy.max_body_bytes:
            raise CallbackRefused(413, f"request body larger than {self.policy.max_body_bytes} bytes", "too_large")

    def parse(self, body: bytes) -> dict[str, Any]:
        """The body as a JSON object, within the size and nesting limits."""
        self.check_size(len(body))
        if json_depth_exceeds(body, self.policy.max_json_depth):
            raise CallbackRefused(400, f"body nests deeper than {self.policy.max_json_depth} levels", "malformed")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError cannot happen below the depth limit; belt and braces
            raise CallbackRefused(400, "body is not JSON", "malformed") from None
        if not isinstance(payload, dict):
            raise CallbackRefused(400, "body is not a JSON object", "malformed")
        return payload

    def needs_lookup(self, service_provider_id: int) -> bool:
        """Would ``admit`` read the database? (An async receiver then calls ``lookup`` in a thread first.)"""
        entry = self._cache.get(service_provider_id)
        return entry is None or entry[0] <= self._clock()

    def lookup(self, service_provider_id: int) -> _Provider:
        """Read (and decrypt) the provider's callback credentials into the cache."""
        provider = self._load(service_provider_id)
        with self._lock:
            if len(self._cache) >= 4096:  # unknown ids are cached too: bound what a caller can make us hold
                self._cache.clear()
            self._cache[service_provider_id] = (self._clock() + self._cache_s, provider)
        return provider

    def admit(self, service_provider_id: int, payload: dict[str, Any]) -> CallbackReport:
        """The callback, when the echoed credentials are the provider's own and it is one; else refused."""
        entry = self._cache.get(service_provider_id)
        provider = entry[1] if entry is not None and entry[0] > self._clock() else self.lookup(service_provider_id)
        unchecked = provider.state == "missing" and self.policy.insecure
        matched = credentials_match(payload, provider.expected if provider.state == "ok" else self._decoy)
        if not (matched and provider.state == "ok") and not unchecked:
            why = "credentials do not match" if provider.state == "ok" else provider.why
            log.warning("callback refused: " + why, service_provider_id=service_provider_id)
            raise CallbackRefused(401, "callback credentials do not match", "refused_auth")
        try:
            return self.reader.read_callback(payload)
        except (ValidationError, ValueError) as exc:
            reason = f"{exc.error_count()} errors" if isinstance(exc, ValidationError) else str(exc)
            raise CallbackRefused(400, f"not a CarrierService callback: {reason}", "malformed") from None

    def _load(self, service_provider_id: int) -> _Provider:
        # A read: it must not queue for SQLite's write lock behind the applier this receiver feeds.
        with read_only_session(self._sessions) as session:
            row = session.execute(_active_credentials().where(ServiceProvider.id == service_provider_id)).first()
        if row is None:
            return _UNKNOWN
        return _provider(row[1], row[2], self._resolve)


def _provider(username: str | None, stored_password: str | None, resolve: SecretResolver | None) -> _Provider:
    if not username and not stored_password:
        return _Provider("missing", why="the service provider has no callback credentials")
    if not username or not stored_password:
        return _Provider("half", why="the service provider's callback credentials are half-configured")
    try:
        password = reveal(stored_password)
        if resolve is not None:
            password = resolve(password)  # an ssm: / secretsmanager: reference
    except Exception as exc:  # a key that no longer decrypts it, a reference that cannot be read
        return _Provider("unreadable", why=f"the callback password cannot be read: {exc}")
    return _Provider("ok", (username, password))


def _active_credentials() -> Any:
    """Active providers with an active ThingSpace authentication: (provider id, username, stored password)."""
    auth = ThingSpaceAuthentication
    return (
        select(ServiceProvider.id, auth.callback_username, auth.callback_password)
        .join(auth, auth.service_provider_id == ServiceProvider.id)
        .where(
            ServiceProvider.is_active.is_(True),
            ServiceProvider.is_deleted.is_(False),
            auth.is_active.is_(True),
            auth.is_deleted.is_(False),
        )
        .order_by(ServiceProvider.id)
    )


def check_callback_setup(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    insecure: bool = False,
    resolve: SecretResolver | None = None,
) -> list[int]:
    """The start-up check of a callback receiver. Returns the providers whose callbacks will be admitted
    without credentials (only with ``insecure``); raises ``CallbackConfigError`` (one line) otherwise."""
    if settings.legacy_callback_username is not None or settings.legacy_callback_password is not None:
        raise CallbackConfigError(
            "BULKCHANGE_CALLBACK_USERNAME / BULKCHANGE_CALLBACK_PASSWORD are no longer read (callback credentials "
            "are per service provider): store the values registered with ThingSpace on each provider with "
            "`bulkchange credentials set --provider N --callback-username U --callback-password -`, then unset them"
        )
    parse_networks(settings.callback_allowed_sources)  # a bad allow-list entry is a start-up error too
    with session_factory() as session:
        rows = session.execute(_active_credentials()).all()
    states = {int(pid): _provider(user, password, resolve) for pid, user, password in rows}
    half = [pid for pid, p in states.items() if p.state == "half"]
    if half:
        raise CallbackConfigError(
            f"service provider(s) {_ids(half)} have only half of their callback credentials (a username without a "
            "password or the reverse): set both with `bulkchange credentials set --provider N --callback-username "
            "U --callback-password -` (the values registered with ThingSpace), or --rotate-callback"
        )
    unreadable = [pid for pid, p in states.items() if p.state == "unreadable"]
    if unreadable:
        raise CallbackConfigError(f"service provider {unreadable[0]}: {states[unreadable[0]].why}")
    missing = [pid for pid, p in states.items() if p.state == "missing"]
    if missing and not insecure:
        raise CallbackConfigError(
            f"service provider(s) {_ids(missing)} have no callback credentials: run `bulkchange credentials set "
            "--provider N --rotate-callback` for each and register them with ThingSpace (`bulkchange providers "
            "register-callback N --public-url https://…`), or serve on loopback with --insecure-callbacks"
        )
    if missing:
        log.warning(
            "INSECURE: callbacks of these providers are admitted without credentials (--insecure-callbacks)",
            service_provider_ids=missing,
        )
    return missing


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)
