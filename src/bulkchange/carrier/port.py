"""The carrier port: everything the engine asks of a carrier, whichever carrier it is.

The engine moves device changes through their states (claim, send, record, verify, reconcile) and never
speaks a carrier's protocol. Each carrier API is an *adapter* implementing ``Carrier`` (pure decisions:
the plan for a target status, which changes share a request, what a device's state says about a step,
what the local tables should say) and ``CarrierSession`` (the calls: authenticate, send a batch of one
step, read devices). Every adapter passes the same conformance suite (``tests/carrier/conformance``)
against its own simulator.

Steps are carrier-specific names (``ADD`` / ``ACTIVATE`` for ThingSpace, ``STATUS`` for Control Center);
the engine stores them on the change row (``Plan``, ``StepIndex``) and hands them back unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import httpx

from bulkchange.carrier.errors import CarrierError
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.deadline import Deadline
from bulkchange.domain.outcomes import CarrierFacts, LogEntry, Outcome, TableRows
from bulkchange.domain.statuses import TargetStatus


class UnsupportedTarget(ValueError):
    """The carrier cannot set this target status (refused when the bulk change is submitted)."""


@dataclass(frozen=True)
class ChangeView:
    """What an adapter sees of one device change: its device, its current step and its request."""

    id: int
    bulk_change_id: int
    iccid: str
    imei: str | None
    target: TargetStatus
    step: str
    request: StatusUpdateRequest
    carrier_request_id: str | None = None
    sent_at: datetime | None = None
    status_details: str | None = None


@dataclass(frozen=True)
class DeactivationTerms:
    """What deactivating a line means at a carrier, for what the operator is shown before submitting.

    ``releases_number``: the carrier takes the line's number (MDN / MSISDN) back, so it is lost;
    ``fee_unless_waived``: an early-termination fee may be charged unless the row sets ``EtfWaiver``;
    ``warning``: the preview's warning on each deactivation row, in the carrier's own terms.
    """

    releases_number: bool
    fee_unless_waived: bool
    warning: str


@dataclass(frozen=True)
class DeviceReading:
    """The carrier's view of one device, in the carrier's own words (``state``) plus what we keep."""

    iccid: str
    state: str | None
    facts: CarrierFacts = field(default_factory=CarrierFacts)
    raw: str = ""


@dataclass(frozen=True)
class CarrierAccount:
    """One service provider's account at its carrier, with secrets already decrypted / resolved.

    ``fields`` are the carrier's own settings (token URL, client id, username, POD 19 flag, TPS …);
    ``secrets`` the values that must never be logged (passwords, API keys, client secrets).
    """

    carrier: str
    provider_id: int
    credential_id: int
    base_url: str
    account: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # never in a log line or a traceback


@dataclass(frozen=True)
class RateRule:
    """At most ``limit`` requests in any ``period_s`` seconds."""

    limit: int
    period_s: float


@dataclass(frozen=True)
class TokenBucket:
    """Every call of the account takes a token from a bucket refilled at ``rate_per_s`` tokens a second that
    holds at most ``burst``: ``burst`` calls may follow each other at once, then one per ``1/rate_per_s``.
    ``burst=1`` spaces every call by a full period."""

    rate_per_s: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")


@dataclass(frozen=True)
class RateRules:
    """An account's limits, shared by every worker: per endpoint (``"*"``: every call of the account), a
    token bucket on every call of the account (None: none), and how many calls may be in flight at once
    (None: no limit)."""

    per_endpoint: Mapping[str, RateRule] = field(default_factory=dict)
    max_in_flight: int | None = None
    bucket: TokenBucket | None = None


Limiter = Callable[[str], Awaitable[None]]
"""Awaited before each carrier request with the endpoint's name; returns when the request may go."""


class LoginGuard(Protocol):
    """Remembers a refused login so no worker tries again before an operator fixed the credentials (a
    carrier that locks a user after a few failures must not see blind retries)."""

    def check(self) -> Awaitable[None] | None: ...

    def record_failure(self, message: str) -> Awaitable[None] | None: ...

    def record_success(self) -> Awaitable[None] | None: ...


@dataclass(frozen=True)
class SessionServices:
    """What the engine lends a session: the shared limiter, the login guard, time budgets, and how to reach
    the carrier over HTTP (``http_transport``: e.g. one that times every call for the metrics; None:
    httpx's own, with the project's TLS and keep-alive settings)."""

    limiter: Limiter | None = None
    login_guard: LoginGuard | None = None
    timeout_s: float = 30.0
    call_attempts: int = 3
    on_rate_limited: Callable[[str, float], None] | None = None
    deadline: Deadline | None = None
    http_transport: Callable[[], httpx.AsyncBaseTransport] | None = None
    reuse: MutableMapping[str, Any] | None = None
    """Where a session may keep what its carrier handed out (access and session tokens) for the next session
    of the same account and credentials in this process; the adapter owns what it puts there (None: a
    session keeps nothing beyond itself)."""

    def http_client(self) -> httpx.AsyncClient | None:
        """An HTTP client over ``http_transport`` for the session to own (None: the client makes its own)."""
        if self.http_transport is None:
            return None
        return httpx.AsyncClient(timeout=self.timeout_s, transport=self.http_transport())


class CarrierSession(Protocol):
    """An open connection to one carrier account (tokens, sessions, HTTP pool). Used by one worker."""

    async def authenticate(self) -> None:
        """Make sure the credentials work before any device is touched; raises ``AuthenticationFailed``."""
        ...

    async def send(self, step: str, changes: Sequence[ChangeView]) -> list[Outcome]:
        """Carry out ``step`` for ``changes`` (all on that step, sharing one batch key): one Outcome each.

        Never raises for a carrier answer — errors become outcomes (RETRY, UNKNOWN, ISOLATE, FAILED) —
        except ``AuthenticationFailed``, which is a bulk-level failure: the batch is given back untouched.
        """
        ...

    async def read(self, changes: Sequence[ChangeView]) -> Mapping[int, DeviceReading | CarrierError | None]:
        """The carrier's view of each change's device (None: not in the account; an error when unreadable)."""
        ...

    async def aclose(self) -> None: ...


LONGEST_PLAN = 2
"""The most steps any carrier's ``plan`` gives a change (e.g. ThingSpace's Add, then Activate). Claims order
due changes by whether a step follows the current one and test for it up to this length; the conformance
suite holds every adapter to it."""


class Carrier(Protocol):
    """One carrier API's decisions. Stateless; shared by every worker."""

    name: str
    steps: tuple[str, ...]
    """Every step name ``plan`` may give (stored on the change rows)."""
    deactivation: DeactivationTerms
    """What a deactivation does to the line here (the preview's warnings, the confirmation's consequences)."""

    def plan(self, target: TargetStatus, request: StatusUpdateRequest, *, ignore_current_status: bool) -> list[str]:
        """The steps that take a device to ``target``; raises ``UnsupportedTarget`` (or ValueError with the
        reason) when this carrier cannot, so the row is refused at submit."""
        ...

    def transition_problem(
        self, current: str | None, target: TargetStatus, *, ignore_current_status: bool
    ) -> str | None:
        """Why a device in local status ``current`` cannot go to ``target`` here, or None."""
        ...

    def batch_key(self, step: str, request: StatusUpdateRequest) -> str:
        """Equal for changes that can go in one request of ``step`` (same request-level fields)."""
        ...

    def max_batch(self, step: str, configured: int) -> int:
        """Devices per request of ``step`` given the configured batch size (a carrier may allow fewer)."""
        ...

    def settles_later(self, step: str) -> bool:
        """True when ``step`` is accepted now and settled later (callback, check), not in its answer."""
        ...

    def local_status(self, step: str, target: TargetStatus, *, last: bool) -> int | None:
        """The local ``DeviceStatusId`` once ``step`` took effect (the target's on the last step); None for a
        step that does not change the device's status (a pre-step such as a rate plan move): leave it."""
        ...

    def step_description(self, step: str) -> str:
        """The ``LogEntryDescription`` of ``step``'s carrier call."""
        ...

    def rate_rules(self, account: CarrierAccount, configured: str) -> RateRules:
        """The account's limits (``configured``: the operator's ``ENDPOINT=LIMIT/SECONDS`` overrides)."""
        ...

    def limit_scope(self, account: CarrierAccount) -> str:
        """The key every worker shares for this account's limits (same account → same budget)."""
        ...

    def connect(self, account: CarrierAccount, services: SessionServices) -> CarrierSession:
        """A session for ``account``; nothing is sent until it is used."""
        ...

    def judge(self, change: ChangeView, reading: DeviceReading | None, *, window_passed: bool, purpose: str) -> Outcome:
        """What the carrier's view of the device says about the change's current step (reconcile after an
        unknown outcome, the deferred check). ``window_passed``: long enough since sending that an
        unchanged device means the step did not happen."""
        ...

    def mirror(
        self, account: CarrierAccount, updates: Sequence[tuple[ChangeView, CarrierFacts]], *, now: datetime
    ) -> list[TableRows]:
        """This carrier's local tables after steps took effect (``updates``: each change, on the step that
        took effect, and what the carrier said about its device; ``now``: the time the rows are written,
        for columns that record when a device was first seen)."""
        ...


@dataclass(frozen=True)
class CallbackReport:
    """What the engine needs to know of a callback to store it and find its change, in neutral words.

    ``operation`` is the step it answers when the callback names one (a success does, a refusal may not);
    ``refused`` and ``succeeded`` are both False for a callback that says neither (no verdict).
    """

    request_id: str
    iccid: str
    status: str | None
    operation: str | None
    succeeded: bool
    refused: bool
    code: str | None = None
    text: str | None = None
    # The adapter's own reading of the body, opaque to the engine: handed back to ``callback_verdict`` with
    # the report, so a callback read to be matched is not parsed again to be judged.
    reading: object = field(default=None, compare=False, repr=False)


@runtime_checkable
class ReceivesCallbacks(Protocol):
    """A carrier that reports the result of an accepted step by calling us back (ThingSpace's
    CarrierService callback). The engine stores each callback as received and later asks the adapter
    what it says about the awaiting change it belongs to."""

    def read_callback(self, payload: str | bytes | Mapping[str, Any]) -> CallbackReport:
        """The callback's request, device and gist; ``ValueError`` when ``payload`` is not a callback of
        this carrier (no requestId, no device)."""
        ...

    def callback_verdict(
        self, payload: str | bytes | Mapping[str, Any], change: ChangeView, *, read: CallbackReport | None = None
    ) -> Outcome:
        """The callback's verdict on ``change`` (awaiting its result): DONE with the carrier's facts, FAILED
        with the carrier's code, or AWAITING unchanged when the callback says neither. Raises
        ``ValueError`` when ``payload`` is not a callback of this carrier. ``read``: what ``read_callback``
        made of this same ``payload``, when the caller has it (its ``reading`` spares a second parse)."""
        ...


@dataclass(frozen=True)
class CallbackRegistration:
    """One listener registered at the carrier for an account: the carrier's service name, where it calls
    and the username it echoes (the password is never read back)."""

    service: str
    url: str | None
    username: str | None = None


@runtime_checkable
class RegistersCallbacks(Protocol):
    """A carrier whose callback listener is registered through its own API (ThingSpace's ``POST
    /callbacks/{account}``): register, list and delete the account's listener for device-change results.

    Each call logs in with the account's credentials and raises ``CarrierError`` when the carrier refuses
    (``AuthenticationFailed`` for refused credentials)."""

    async def register_callback(
        self, account: CarrierAccount, url: str, *, username: str, password: str, services: SessionServices
    ) -> CallbackRegistration:
        """Register (or replace) the account's listener: ``url``, and the credentials the carrier echoes."""
        ...

    async def list_callbacks(self, account: CarrierAccount, services: SessionServices) -> list[CallbackRegistration]:
        """Every listener the carrier has registered for the account (of any service)."""
        ...

    async def delete_callback(self, account: CarrierAccount, services: SessionServices) -> None:
        """Delete the account's device-change listener (the one ``register_callback`` registers)."""
        ...


def log_for(change: ChangeView, description: str, ok: bool, **texts: str | None) -> LogEntry:
    """A log row of ``change`` (helper shared by adapters)."""
    return LogEntry(change.bulk_change_id, change.id, description, ok, **texts)
