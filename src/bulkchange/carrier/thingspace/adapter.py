"""Verizon ThingSpace M2M v1 behind the carrier port: ``ThingSpaceCarrier`` (decisions) and
``ThingSpaceSession`` (calls, over ``ThingSpaceClient``).

Steps: ``ADD`` (answered in its response), ``ACTIVATE``, ``DEACTIVATE``, ``SUSPEND``, ``RESTORE`` (accepted
with a requestId, settled by the CarrierService callback or a read of the device). Every target status
is supported; the plans are in ``steps``, the request fields and batch keys in ``requests``, the verdicts
in ``verdicts``, the local tables in ``mirror``.

A ThingSpace ``CarrierAccount``: ``base_url``; ``account`` = the account number (``accountName`` on the
wire); ``fields``: ``client_id``, ``username`` (required), ``token_url``, ``login_url`` (optional: derived
from ``base_url``), ``callback_url`` (optional, where CarrierService callbacks are registered); ``secrets``:
``client_secret``, ``password``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bulkchange.carrier import errors as cerr
from bulkchange.carrier.port import (
    CallbackRegistration,
    CallbackReport,
    Carrier,
    CarrierAccount,
    ChangeView,
    DeactivationTerms,
    DeviceReading,
    RateRule,
    RateRules,
    ReceivesCallbacks,
    RegistersCallbacks,
    SessionServices,
)
from bulkchange.carrier.rate_rules import with_overrides
from bulkchange.carrier.thingspace import mirror, steps, verdicts
from bulkchange.carrier.thingspace.client import LOGIN, ThingSpaceAuth, ThingSpaceClient
from bulkchange.carrier.thingspace.models import ActionAccepted, CallbackMessage, DeviceId, ThingSpaceConnection
from bulkchange.carrier.thingspace.requests import (
    MAX_DEVICES_PER_REQUEST,
    batch_key,
    device_ids,
    device_request_text,
    request_fields,
)
from bulkchange.carrier.thingspace.steps import Step, step_of
from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.domain.outcomes import CarrierFacts, Outcome, TableRows
from bulkchange.domain.statuses import TargetStatus

NAME = "thingspace"
CALLBACK_SERVICE = "CarrierService"
"""The ThingSpace callback service that reports the results of device changes (activate, suspend …)."""
DEFAULT_RATE_RULES: Mapping[str, RateRule] = {"devices/actions/activate": RateRule(100, 60.0)}
"""ThingSpace's documented limit: 100 Activate requests per minute per account; other endpoints publish none."""


def thingspace_account(
    *,
    provider_id: int,
    credential_id: int,
    base_url: str,
    account_number: str,
    client_id: str,
    username: str,
    client_secret: str,
    password: str,
    token_url: str = "",
    login_url: str = "",
    callback_url: str | None = None,
) -> CarrierAccount:
    """A ThingSpace ``CarrierAccount`` from its settings (secrets already decrypted / resolved)."""
    fields: dict[str, Any] = {"client_id": client_id, "username": username, "token_url": token_url}
    fields["login_url"] = login_url
    if callback_url:
        fields["callback_url"] = callback_url
    return CarrierAccount(
        carrier=NAME,
        provider_id=provider_id,
        credential_id=credential_id,
        base_url=base_url,
        account=account_number,
        fields=fields,
        secrets={"client_secret": client_secret, "password": password},
    )


def connection_for(account: CarrierAccount) -> ThingSpaceConnection:
    """The client's connection settings; ``AuthenticationFailed`` when a credential is missing."""
    missing = [k for k in ("client_id", "username") if not account.fields.get(k)]
    missing += [k for k in ("client_secret", "password") if not account.secrets.get(k)]
    if missing:
        raise cerr.AuthenticationFailed(
            f"ThingSpace account {account.account}: no {', '.join(missing)} configured", endpoint=LOGIN
        )
    return ThingSpaceConnection(
        base_url=account.base_url,
        token_url=str(account.fields.get("token_url") or ""),
        login_url=str(account.fields.get("login_url") or ""),
        client_id=str(account.fields["client_id"]),
        client_secret=account.secrets["client_secret"],
        username=str(account.fields["username"]),
        password=account.secrets["password"],
        account_name=account.account,
    )


_AUTH_KEY = "thingspace.auth"


def _kept_auth(services: SessionServices) -> ThingSpaceAuth | None:
    """The tokens kept for this account's credentials in this process (made on first use), or None."""
    if services.reuse is None:
        return None
    kept = services.reuse.get(_AUTH_KEY)
    if not isinstance(kept, ThingSpaceAuth):
        kept = services.reuse[_AUTH_KEY] = ThingSpaceAuth()
    return kept


class ThingSpaceSession:
    """One worker's connection to one ThingSpace account (access token, session token, HTTP pool)."""

    def __init__(self, account: CarrierAccount, services: SessionServices) -> None:
        self.account = account
        self._services = services
        self._http = services.http_client()
        self.client = ThingSpaceClient(
            connection_for(account),
            http=self._http,
            timeout=services.timeout_s,
            max_attempts=services.call_attempts,
            limiter=services.limiter,
            login_guard=services.login_guard,
            deadline=services.deadline,
            auth=_kept_auth(services),
        )

    async def authenticate(self) -> None:
        """Obtain the access token and log in; ``AuthenticationFailed`` (``LoginLocked`` when the login
        guard refuses to try) when the credentials do not work."""
        await self.client.authenticate()

    async def send(self, step: str, changes: Sequence[ChangeView]) -> list[Outcome]:
        """One request of ``step`` for ``changes`` (they share its request fields: the first change's
        request is sent); one Outcome each. Raises only ``AuthenticationFailed``."""
        if not changes:
            return []
        s = step_of(step)
        request = changes[0].request
        fields = request_fields(s, request)
        texts = {c.id: device_request_text(s, c.iccid, c.imei, fields, self.account.account) for c in changes}
        devices = [device_ids(s, c.iccid, c.imei) for c in changes]
        try:
            if s is Step.ADD:
                added = await self.client.add_devices(
                    devices, account_name=self.account.account, sku_number=request.request.sku_number
                )
                return verdicts.add_outcomes(changes, added.devices, texts, added.response_text)
            accepted = await self._action(s, devices, request)
        except cerr.AuthenticationFailed:
            raise  # the bulk change's failure: the engine gives the batch back untouched
        except cerr.CarrierError as exc:
            if isinstance(exc, cerr.RateLimited) and exc.retry_after and self._services.on_rate_limited:
                self._services.on_rate_limited(s.endpoint, exc.retry_after)  # every worker waits it out
            return verdicts.error_outcomes(s, changes, exc, texts)
        return verdicts.accepted_outcomes(s, changes, accepted, texts)

    async def _action(self, step: Step, devices: list[list[DeviceId]], request: StatusUpdateRequest) -> ActionAccepted:
        r, account = request.request, self.account.account
        if step is Step.ACTIVATE:
            return await self.client.activate(
                devices,
                service_plan=r.rate_plan_code or "",
                mdn_zip_code=r.zip_for_activation or "",
                account_name=account,
                sku_number=r.sku_number,
                public_ip_restriction=r.public_ip_restriction,
                primary_place_of_use=r.thing_space_ppu.to_carrier() if r.thing_space_ppu else None,
            )
        if step is Step.DEACTIVATE:
            return await self.client.deactivate(
                devices, reason_code=r.reason_code or "FF", etf_waiver=r.etf_waiver, account_name=account
            )
        if step is Step.SUSPEND:
            return await self.client.suspend(devices, account_name=account)
        return await self.client.restore(devices, account_name=account)

    async def read(self, changes: Sequence[ChangeView]) -> dict[int, DeviceReading | cerr.CarrierError | None]:
        """Each change's device as the carrier lists it (one list request per 2,000 devices); None when the
        carrier does not know it, the error for every change when the read failed. Raises only
        ``AuthenticationFailed``."""
        if not changes:
            return {}
        try:
            found = await self.client.get_devices([DeviceId(kind="iccid", id=c.iccid) for c in changes])
        except cerr.AuthenticationFailed:
            raise
        except cerr.CarrierError as exc:
            return {c.id: exc for c in changes}
        by_iccid = {d.iccid: verdicts.reading_of(d) for d in found if d.iccid}
        return {c.id: by_iccid.get(c.iccid) for c in changes}

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._http is not None:  # made for this session from the services' transport: ours to close
            await self._http.aclose()


class ThingSpaceCarrier:
    """ThingSpace's decisions. Stateless; one instance serves every account and worker."""

    name = NAME
    steps: tuple[str, ...] = tuple(step.value for step in Step)
    deactivation = DeactivationTerms(
        releases_number=True,
        fee_unless_waived=True,
        warning="deactivation releases the line's MDN: the phone number is lost",
    )

    def plan(self, target: TargetStatus, request: StatusUpdateRequest, *, ignore_current_status: bool) -> list[str]:
        return [s.value for s in steps.plan(target, request, ignore_current_status=ignore_current_status)]

    def transition_problem(
        self, current: str | None, target: TargetStatus, *, ignore_current_status: bool
    ) -> str | None:
        return steps.transition_problem(current, target, ignore_current_status=ignore_current_status)

    def batch_key(self, step: str, request: StatusUpdateRequest) -> str:
        return batch_key(step_of(step), request)

    def max_batch(self, step: str, configured: int) -> int:
        step_of(step)
        return max(1, min(configured, MAX_DEVICES_PER_REQUEST))

    def settles_later(self, step: str) -> bool:
        return step_of(step).settles_later

    def local_status(self, step: str, target: TargetStatus, *, last: bool) -> int:
        return steps.local_status(step_of(step), target, last=last)

    def step_description(self, step: str) -> str:
        return step_of(step).description

    def rate_rules(self, account: CarrierAccount, configured: str) -> RateRules:
        """ThingSpace's documented limits, with every endpoint the operator configured replaced or added."""
        return RateRules(per_endpoint=with_overrides(DEFAULT_RATE_RULES, configured))

    def limit_scope(self, account: CarrierAccount) -> str:
        return f"thingspace:{account.base_url}:{account.account}"

    def connect(self, account: CarrierAccount, services: SessionServices) -> ThingSpaceSession:
        return ThingSpaceSession(account, services)

    def judge(self, change: ChangeView, reading: DeviceReading | None, *, window_passed: bool, purpose: str) -> Outcome:
        return verdicts.judge(change, reading, window_passed=window_passed, purpose=purpose)

    def mirror(
        self, account: CarrierAccount, updates: Sequence[tuple[ChangeView, CarrierFacts]], *, now: datetime
    ) -> list[TableRows]:
        return mirror.mirror_rows(account, updates, now=now)

    def callback_verdict(
        self, payload: str | bytes | Mapping[str, Any], change: ChangeView, *, read: CallbackReport | None = None
    ) -> Outcome:
        known = read.reading if read is not None else None
        message = known if isinstance(known, CallbackMessage) else verdicts.parse_callback(payload)
        return verdicts.callback_verdict(message, change)

    def read_callback(self, payload: str | bytes | Mapping[str, Any]) -> CallbackReport:
        return verdicts.callback_report(verdicts.parse_callback(payload))

    # ------------------------------------------------------------------ the CarrierService listener

    async def register_callback(
        self, account: CarrierAccount, url: str, *, username: str, password: str, services: SessionServices
    ) -> CallbackRegistration:
        session = ThingSpaceSession(account, services)
        try:
            await session.client.register_callback(
                CALLBACK_SERVICE, url, username=username, password=password, account_name=account.account
            )
        finally:
            await session.aclose()
        return CallbackRegistration(service=CALLBACK_SERVICE, url=url, username=username)

    async def list_callbacks(self, account: CarrierAccount, services: SessionServices) -> list[CallbackRegistration]:
        session = ThingSpaceSession(account, services)
        try:
            listeners = await session.client.list_callbacks(account_name=account.account)
        finally:
            await session.aclose()
        return [CallbackRegistration(service=x.service_name, url=x.url, username=x.username) for x in listeners]

    async def delete_callback(self, account: CarrierAccount, services: SessionServices) -> None:
        session = ThingSpaceSession(account, services)
        try:
            await session.client.delete_callback(CALLBACK_SERVICE, account_name=account.account)
        finally:
            await session.aclose()


if TYPE_CHECKING:  # the adapter satisfies the port: checked by the type checker, nothing runs
    _carrier: Carrier = ThingSpaceCarrier()
    _callbacks: ReceivesCallbacks = ThingSpaceCarrier()
    _registers: RegistersCallbacks = ThingSpaceCarrier()
