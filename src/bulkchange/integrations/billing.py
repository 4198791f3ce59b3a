"""The additional step of a PROCESSED change: customer rate plan association and the Rev.io service.

A change whose request names a ``CustomerRatePlan`` or carries ``RevService`` /
``RevServiceProductCreateModel`` gets ``AdditionalStepStatus = PENDING`` in the transaction that makes it
PROCESSED (``steps.schedule_after_success``). A worker then:

1. claims due steps in one atomic UPDATE with a lease (``AdditionalStepLeaseOwner`` / ``…ExpiresAt``),
   counting the attempt — like a carrier step; an expired PROCESSING lease (a crashed worker) is claimed
   again;
2. associates the device with the customer rate plan (DB, idempotent);
3. creates the Rev.io service: the *intent* (a ``RevService`` row, Status CREATING) is committed before
   the call; when a CREATING row is found on a later attempt the outcome of the earlier call is unknown,
   so the service is looked up by number first and adopted when it exists — never created twice;
   one service per *device service* (Rev.io account + number), not only per change: when another change
   already created the service of this number, it is adopted (same device, customer and service type:
   recorded on this change with Status ADOPTED, nothing created) or refused (anything else: the step ends
   in ERROR saying which service holds the number). ``UX_RevService_LiveNumber`` allows one creator row
   per number, so two workers billing the same device cannot both call Rev.io;
4. creates each product the same way (a ``RevServiceProduct`` row per position, looked up by service);
   on an adopted service, a product it already carries is adopted too, not added again;
5. settles: PROCESSED, or PENDING again with backoff after a transient failure, or ERROR when refused or
   out of attempts. The carrier result is never touched.

Every Rev.io call and DB step writes a ``DeviceBulkChangeLog`` row with the original's descriptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bulkchange.domain.change_request import RevServiceRequest, StatusUpdateRequest
from bulkchange.domain.deadline import Deadline, OutOfTime
from bulkchange.domain.outcomes import LogEntry
from bulkchange.domain.retry import RetryPolicy
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine.additional_step import WAITING_FOR_CREDENTIALS, AdditionalStepStatus, billing_model
from bulkchange.engine.bulk_status import refresh_status
from bulkchange.engine.context import EngineContext
from bulkchange.engine.logbook import write_logs
from bulkchange.integrations.revio import (
    RevioClient,
    RevioConnection,
    RevioCredentialsRefused,
    RevioRefused,
    RevioTransient,
)
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.jobs import statements as jobs
from bulkchange.jobs.kinds import BILLING_STEP
from bulkchange.security.crypto import reveal
from bulkchange.store.constraints import violates
from bulkchange.store.db import is_connection_lost, read_only_session
from bulkchange.store.tables import (
    LIVE_REV_SERVICE_INDEX,
    REV_SERVICE_ADOPTED,
    REV_SERVICE_CREATED,
    REV_SERVICE_CREATING,
    REV_SERVICE_LIVE,
    REV_SERVICE_REFUSED,
    CustomerRatePlan,
    Device,
    DeviceBulkChange,
    IntegrationAuthentication,
    M2MDeviceChange,
    RevService,
    RevServiceProduct,
)

log = structlog.get_logger("bulkchange.billing")

C = M2MDeviceChange
_T = BILLING_STEP.table
S = AdditionalStepStatus

SERVICE_API = "Create Rev.io Service: Rev.io API"
SERVICE_DB = "Create Rev.io Service: Update AMOP"
SERVICE_LOOKUP = "Find Rev.io Service: Rev.io API"
SERVICE_ADOPT = "Adopt Rev.io Service: Update AMOP"
SERVICE_HELD = "Create Rev.io Service: number already billed"
PRODUCT_API = "Create Rev.io Service Product: Rev.io API"
PRODUCT_DB = "Create Rev.io Service Product: Update AMOP"
PRODUCT_LOOKUP = "Find Rev.io Service Product: Rev.io API"
RATE_PLAN_DB = "Associate Customer Rate Plan: Update AMOP"

# Targets whose device has no MSISDN by nature: the ICCID stands in as the Rev.io service number.
_NO_MSISDN_BY_NATURE = {TargetStatus.INVENTORY.value, TargetStatus.PENDING_ACTIVATION.value}

ClientFactory = Callable[[RevioConnection, float], RevioClient]


class StepFailed(Exception):
    """Refused or impossible: the additional step ends in ERROR (no retry)."""


class StepWaitsForCredentials(Exception):
    """Rev.io refused the credential (401 / 403): the step waits, visibly, for an operator to fix it."""


class StepRetry(Exception):
    """Transient: the additional step is tried again after a backoff."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Job:
    """What one additional step needs, read once after the claim."""

    change_id: int
    bulk_change_id: int
    tenant_id: int  # the bulk change's: the only tenant whose credential and rate plans the step may use
    iccid: str
    target: str
    msisdn: str | None
    device_id: int | None
    request: StatusUpdateRequest
    auth_id: int | None
    connection: RevioConnection | None


class _Intent(Enum):
    NEW = "new"  # recorded now: call Rev.io
    EARLIER = "earlier"  # recorded by an earlier attempt whose outcome is unknown: look it up first


@dataclass(frozen=True)
class Service:
    """The Rev.io service a change ends up with: created by it, or adopted from the change that created it."""

    number: str
    service_id: int
    adopted: bool = False
    created_by: int | None = None  # the change that created it, when adopted (known when adopted just now)


@dataclass(frozen=True)
class Product:
    position: int
    product_id: int
    rate: Decimal | None


def products_of(req: StatusUpdateRequest) -> list[Product]:
    """The products to attach: none with a package (as the original), else the list or the single product."""
    service = billing_model(req)
    model = req.rev_service_product_create_model or req.rev_service
    if service is None or model is None or service.rev_package_id is not None:
        return []
    if model.rev_product_id_list:
        rates = model.rate_list or []
        if len(rates) != len(model.rev_product_id_list):  # refused at submit; guard stale rows
            raise StepFailed("RevProductIdList and RateList have different lengths")
        return [Product(i, p, r) for i, (p, r) in enumerate(zip(model.rev_product_id_list, rates, strict=True))]
    if model.rev_product_id is not None:
        return [Product(0, model.rev_product_id, model.rate)]
    return []


def _refusal(job: Job, exc: RevioRefused) -> Exception:
    """What a Rev.io refusal does to the step: a refused credential makes it wait for the operator; any
    other refusal ends it in ERROR."""
    if isinstance(exc, RevioCredentialsRefused):
        return StepWaitsForCredentials(
            f"{WAITING_FOR_CREDENTIALS} (Rev.io credential {job.auth_id}: {exc.message}); fix it with "
            f"`bulkchange credentials set --billing {job.auth_id}` or re-run the step"
        )
    return StepFailed(exc.message)


def _date(value: str | None) -> str | None:
    """``yyyy-MM-dd`` from a date or an ISO timestamp."""
    if not value:
        return None
    return value.strip()[:10]


def _parse_date(value: str | None) -> datetime | None:
    text = _date(value)
    try:
        return datetime.strptime(text, "%Y-%m-%d") if text else None
    except ValueError:
        return None


class BillingRunner:
    """Claims and runs due additional steps. One per worker; safe with any number of workers."""

    kind = "billing step"

    def __init__(
        self,
        ctx: EngineContext,
        settings: IntegrationSettings,
        *,
        client_factory: ClientFactory | None = None,
        clock: Callable[[], datetime] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.client_factory = client_factory or (lambda conn, timeout: RevioClient(conn, timeout=timeout))
        self.clock = clock or ctx.clock
        self.worker_id = worker_id or f"{ctx.worker_id}:billing"
        self.policy = RetryPolicy(
            max_attempts=settings.billing_max_attempts,
            base_s=settings.billing_retry_base_s,
            cap_s=settings.billing_retry_cap_s,
        )

    # ---------------------------------------------------------------------------- scheduling

    def next_due_in_s(self) -> float | None:
        """Seconds until the next step is due (0 = now), or None when no step is waiting."""
        with read_only_session(self.ctx.session_factory) as session:
            return jobs.next_due_in_s(session, BILLING_STEP, now=self.clock())

    def claim(self, limit: int) -> list[int]:
        now = self.clock()
        # A read first: most turns of the worker loop find nothing, and must not take (or wait for) a write lock.
        with read_only_session(self.ctx.session_factory) as probe:
            if not jobs.any_due(probe, BILLING_STEP, now=now):
                return []
        with self.ctx.session_factory.begin() as session:
            rows = jobs.claim(
                session,
                BILLING_STEP,
                where=[BILLING_STEP.claimable(now)],
                owner=self.worker_id,
                now=now,
                lease_s=self.settings.billing_lease_s,
                limit=limit,
            )
        return [int(row[0]) for row in rows]

    async def run_due(self, *, deadline: Deadline | None = None) -> int:
        """Claim a batch of due steps and run them (bounded concurrency). Returns how many ran.

        With a ``deadline``, nothing is claimed unless one Rev.io call's timeout still fits, and every call
        is bounded by it; a step whose call could not be made in time goes back as it was (not an attempt).
        """
        if deadline is not None and not deadline.allows(self.settings.billing_timeout_s):
            return 0
        ids = self.claim(self.settings.billing_batch)
        if not ids:
            return 0
        clients: dict[int, RevioClient] = {}
        gate = asyncio.Semaphore(self.settings.billing_concurrency)

        async def one(change_id: int) -> None:
            async with gate:
                await self.run_claimed(change_id, clients, deadline=deadline)

        try:
            # Every step runs to its end before a failure is raised (none is left running unowned).
            results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        finally:
            for client in clients.values():
                await client.aclose()
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        return len(ids)

    # ------------------------------------------------------------------------------- one step

    async def run_claimed(
        self, change_id: int, clients: dict[int, RevioClient] | None = None, *, deadline: Deadline | None = None
    ) -> None:
        """Run one claimed step to a settled state (or back to PENDING with a backoff)."""
        clients = {} if clients is None else clients
        bound = log.bind(change_id=change_id)
        try:
            job = self._job(change_id)
            details: list[str] = []
            if job.request.customer_rate_plan:
                details.append(self._associate_rate_plan(job))
            model = billing_model(job.request)
            if model is not None:
                if job.connection is None or job.auth_id is None:
                    raise StepFailed(
                        f"no active Rev.io integration authentication {job.request.integration_authentication_id}"
                    )
                client = clients.get(job.auth_id)
                if client is None:
                    client = clients[job.auth_id] = self.client_factory(job.connection, self.settings.billing_timeout_s)
                client.deadline = deadline
                service = await self._service(job, model, client)
                count = await self._products(job, model, service, client)
                details.append(f"Rev.io service {service.service_id} for {service.number} with {count} product(s)")
                if service.adopted:
                    details[-1] += f", adopted: created by change {service.created_by or 'another change'}"
            self._settle(job.change_id, S.PROCESSED, "; ".join(details) or "nothing to do")
        except StepWaitsForCredentials as exc:
            bound.warning("additional step waits for its billing credentials", reason=str(exc))
            self._settle(change_id, S.WAITING_CREDENTIALS, str(exc))
        except StepFailed as exc:
            bound.warning("additional step failed", reason=str(exc))
            self._settle(change_id, S.ERROR, str(exc))
        except StepRetry as exc:
            if isinstance(exc.__cause__, OutOfTime):
                self._release(change_id, str(exc))
            else:
                self._retry(change_id, str(exc), exc.retry_after_s)
        except Exception as exc:  # a bug or the database: keep the step, try again later
            if is_connection_lost(exc):
                raise  # the worker loop waits the outage out; the step's lease brings it back after
            bound.exception("additional step crashed; will retry")
            self._retry(change_id, f"{type(exc).__name__}: {exc}", None)

    def _job(self, change_id: int) -> Job:
        with self.ctx.session_factory() as session:
            change = session.get(C, change_id)
            if change is None:
                raise StepFailed(f"change {change_id} is gone")
            req = StatusUpdateRequest.from_json(change.change_request)
            tenant_id = session.execute(
                select(DeviceBulkChange.tenant_id).where(DeviceBulkChange.id == change.bulk_change_id)
            ).scalar_one()
            msisdn = change.msisdn
            if not msisdn and change.device_id is not None:
                device = session.get(Device, change.device_id)
                msisdn = device.msisdn if device is not None else None
            auth_row = (
                session.get(IntegrationAuthentication, req.integration_authentication_id)
                if req.integration_authentication_id is not None
                else None
            )
            # Checked at submit too; checked again here because the stored request is what runs (a change
            # written before credentials had tenants, or by hand): another tenant's is as good as none.
            if auth_row is not None and auth_row.tenant_id != tenant_id:
                auth_row = None
            connection = None
            if auth_row is not None and auth_row.is_active and not auth_row.is_deleted:
                resolve: Callable[[str], str] | None = getattr(self.ctx, "secret_resolver", None)

                def value(raw: str) -> str:
                    plain = reveal(raw)  # decrypted here only (stored encrypted: security.crypto)
                    return plain if resolve is None else reveal(resolve(plain))

                connection = RevioConnection(
                    base_url=auth_row.base_url,
                    username=value(auth_row.username),
                    client_code=auth_row.client_code,
                    password=value(auth_row.password),
                    subscription_key=value(auth_row.subscription_key),
                )
            return Job(
                change_id=change.id,
                bulk_change_id=change.bulk_change_id,
                tenant_id=tenant_id,
                iccid=change.iccid,
                target=change.target_status,
                msisdn=msisdn,
                device_id=change.device_id,
                request=req,
                auth_id=auth_row.id if connection is not None and auth_row is not None else None,
                connection=connection,
            )

    def _log(self, session: Session, job: Job, entries: list[LogEntry]) -> None:
        write_logs(session, entries, process_by=self.ctx.settings.process_by)

    def _entry(self, job: Job, description: str, ok: bool, **texts: str | None) -> LogEntry:
        return LogEntry(job.bulk_change_id, job.change_id, description, ok, **texts)

    # ------------------------------------------------------------------------ customer rate plan

    def _associate_rate_plan(self, job: Job) -> str:
        name = job.request.customer_rate_plan or ""
        with self.ctx.session_factory.begin() as session:
            plan = session.execute(
                select(CustomerRatePlan).where(
                    CustomerRatePlan.tenant_id == job.tenant_id,
                    CustomerRatePlan.name == name,
                    CustomerRatePlan.is_deleted.is_(False),
                )
            ).scalar_one_or_none()
            device = session.get(Device, job.device_id) if job.device_id is not None else None
            if plan is None or device is None:
                reason = f"customer rate plan {name!r} not found" if plan is None else "no local device row"
                self._log(session, job, [self._entry(job, RATE_PLAN_DB, False, error_text=reason)])
                raise StepFailed(f"customer rate plan not associated: {reason}")
            if plan.is_pool:
                device.customer_rate_pool_id = plan.id
            else:
                device.customer_rate_plan_id = plan.id
            device.modified_by = self.ctx.settings.process_by
            device.modified_date = self.clock()
            kind = "pool" if plan.is_pool else "plan"
            text = f"Device {device.id} ({job.iccid}) → customer rate {kind} {plan.name} ({plan.id})"
            self._log(session, job, [self._entry(job, RATE_PLAN_DB, True, request_text=text)])
        return f"customer rate {kind} {name}"

    # ----------------------------------------------------------------------------- Rev.io service

    def _number(self, job: Job) -> str:
        """The service number: the MSISDN; the ICCID only for a device that has none by nature."""
        if job.msisdn:
            return job.msisdn
        if job.target in _NO_MSISDN_BY_NATURE:
            return job.iccid
        raise StepFailed(f"no MSISDN known for this {job.target} device; the Rev.io service number must be the MSISDN")

    async def _service(self, job: Job, model: RevServiceRequest, client: RevioClient) -> Service:
        number = self._number(job)
        try:
            customer_id = int(str(model.rev_customer_id))
        except ValueError as exc:
            raise StepFailed(f"RevCustomerId {model.rev_customer_id!r} is not a number") from exc
        if model.service_type_id is None:
            raise StepFailed("ServiceTypeId is missing")
        body: dict[str, Any] = {
            "customer_id": customer_id,
            "number": number,
            "number2": job.iccid,
            "service_type_id": model.service_type_id,
        }
        if model.provider_id is not None:
            body["provider_id"] = model.provider_id
        if model.prorate and model.effective_date:
            body["effective_date"] = _date(model.effective_date)
        if model.activated_date:
            body["activated_date"] = _date(model.activated_date)
        if model.usage_plan_group_id is not None:
            body["usage_plan_group_id"] = model.usage_plan_group_id
        if model.rev_package_id is not None:
            body["package_id"] = model.rev_package_id

        intent = self._intent(job, model, number, customer_id)
        if isinstance(intent, Service):
            return intent
        if intent is _Intent.EARLIER:
            found = await self._find_service(job, client, number, customer_id, model.service_type_id)
            if found is not None:
                self._record_service(job, found, adopted=True)
                return Service(number, found)

        try:
            service_id, call = await client.create_service(body)
        except RevioRefused as exc:
            self._log_failure(job, SERVICE_API, exc, refused_service=True)
            raise _refusal(job, exc) from exc
        except RevioTransient as exc:
            self._log_failure(job, SERVICE_API, exc)
            raise StepRetry(exc.message, exc.retry_after_s) from exc
        self._record_service(job, service_id, adopted=False, api=(call.request_text, call.response_text))
        return Service(number, service_id)

    def _intent(self, job: Job, model: RevServiceRequest, number: str, customer_id: int) -> Service | _Intent:
        """Record the intent to create (committed before the call), or what makes creating unnecessary.

        Returns the service when this change already has one (created, adopted), ``EARLIER`` when an earlier
        attempt's outcome is unknown (look it up first), ``NEW`` when the call is to be made. Another change's
        service for the same number is adopted or refused here (``_adopt_or_refuse``); the unique index on the
        live rows makes the check and the insert one decision even with two workers at the same moment.
        """
        refusal: str | None = None
        try:
            with self.ctx.session_factory.begin() as session:
                row = session.execute(
                    select(RevService).where(RevService.m2m_device_change_id == job.change_id)
                ).scalar_one_or_none()
                if row is not None and row.status != REV_SERVICE_CREATING and row.rev_service_id is not None:
                    return Service(row.number or number, row.rev_service_id, adopted=row.status == REV_SERVICE_ADOPTED)
                if row is not None and row.status == REV_SERVICE_CREATING:
                    return _Intent.EARLIER
                holder = self._holder(session, job, number)
                if holder is not None:
                    adopted = self._adopt_or_refuse(session, job, model, number, customer_id, holder, row)
                    if isinstance(adopted, Service):
                        return adopted
                    refusal = adopted
                else:
                    row = row or RevService(m2m_device_change_id=job.change_id, created_date=self.clock())
                    self._describe(row, job, model, number, customer_id)
                    row.status = REV_SERVICE_CREATING
                    session.add(row)
                    session.flush()  # the live-number index decides here, inside this transaction
        except IntegrityError as exc:
            if violates(exc, LIVE_REV_SERVICE_INDEX):
                raise StepRetry(f"another change is creating the Rev.io service for {number}; waiting for it") from exc
            raise StepRetry("another worker is creating this service") from exc  # this change's own row
        if refusal is not None:
            raise StepFailed(refusal)
        return _Intent.NEW

    def _describe(self, row: RevService, job: Job, model: RevServiceRequest, number: str, customer_id: int) -> None:
        """The service's fields as this change asks for them (a new row, or one whose creation was refused)."""
        row.rev_customer_id = str(customer_id)
        row.number = number
        row.number2 = job.iccid
        row.rev_service_type_id = model.service_type_id
        row.rev_provider_id = model.provider_id
        row.rev_usage_plan_group_id = model.usage_plan_group_id or 0
        row.rev_package_id = model.rev_package_id
        row.rev_activated_date = _parse_date(model.activated_date) or self.clock()
        row.device_id = job.device_id
        row.integration_authentication_id = job.auth_id
        row.rev_service_id = None
        row.modified_date = self.clock()

    def _holder(self, session: Session, job: Job, number: str) -> RevService | None:
        """Another change's live row for this number in this Rev.io account: the device service's creator."""
        return session.execute(
            select(RevService).where(
                RevService.integration_authentication_id == job.auth_id,
                RevService.number == number,
                RevService.status.in_(REV_SERVICE_LIVE),
                RevService.m2m_device_change_id != job.change_id,
            )
        ).scalar_one_or_none()

    def _adopt_or_refuse(
        self,
        session: Session,
        job: Job,
        model: RevServiceRequest,
        number: str,
        customer_id: int,
        holder: RevService,
        row: RevService | None,
    ) -> Service | str:
        """The number is already billed by another change: adopt its service, or say why not (logged either way).

        Adopted only when it is the same device service — the same ICCID, customer and service type — so the
        device stays billed once, as asked. Anything else (another customer or service type, or the number now
        on another device) needs an operator in Rev.io: the step is refused naming the service that holds it.
        A creation still in progress (or of unknown outcome) is waited for.
        """
        if holder.status == REV_SERVICE_CREATING or holder.rev_service_id is None:
            raise StepRetry(
                f"change {holder.m2m_device_change_id} is creating the Rev.io service for {number}; waiting for it"
            )
        held = (
            f"number {number} already has Rev.io service {holder.rev_service_id} (customer {holder.rev_customer_id}, "
            f"service type {holder.rev_service_type_id}, ICCID {holder.number2}) created by change "
            f"{holder.m2m_device_change_id}"
        )
        same = (
            holder.number2 == job.iccid
            and holder.rev_customer_id == str(customer_id)
            and holder.rev_service_type_id == model.service_type_id
        )
        bound = log.bind(change_id=job.change_id, number=number, rev_service_id=holder.rev_service_id)
        if not same:
            reason = (
                f"{held}; not creating a second service for customer {customer_id}, service type "
                f"{model.service_type_id}: a device service is billed once; change that service in Rev.io if "
                "this customer or type is the right one"
            )
            self._log(session, job, [self._entry(job, SERVICE_HELD, False, error_text=reason)])
            bound.warning("Rev.io service refused: the number is already billed", holder=holder.m2m_device_change_id)
            return reason
        row = row or RevService(m2m_device_change_id=job.change_id, created_date=self.clock())
        self._describe(row, job, model, number, customer_id)
        row.rev_service_id = holder.rev_service_id
        row.status = REV_SERVICE_ADOPTED
        session.add(row)
        text = f"{held}: adopted for this change (same device, customer and service type); nothing created"
        self._log(session, job, [self._entry(job, SERVICE_ADOPT, True, request_text=text)])
        bound.info("Rev.io service adopted from another change", holder=holder.m2m_device_change_id)
        return Service(number, holder.rev_service_id, adopted=True, created_by=holder.m2m_device_change_id)

    async def _find_service(
        self, job: Job, client: RevioClient, number: str, customer_id: int, service_type_id: int
    ) -> int | None:
        """After an unknown outcome: the service our earlier attempt created, if it exists."""
        try:
            records, call = await client.find_services(number)
        except (RevioRefused, RevioTransient) as exc:
            self._log_failure(job, SERVICE_LOOKUP, exc)
            if isinstance(exc, RevioCredentialsRefused):
                raise _refusal(job, exc) from exc
            raise StepRetry(f"cannot look the service up before creating it again: {exc.message}") from exc
        with self.ctx.session_factory() as session:
            taken = set(
                session.execute(
                    select(RevService.rev_service_id).where(
                        RevService.m2m_device_change_id != job.change_id, RevService.rev_service_id.is_not(None)
                    )
                ).scalars()
            )
        matches = [
            int(r["service_id"])
            for r in records
            if r.get("number2") == job.iccid
            and str(r.get("customer_id")) == str(customer_id)
            and str(r.get("service_type_id")) == str(service_type_id)
            and isinstance(r.get("service_id"), int)
            and r["service_id"] not in taken
        ]
        found = max(matches) if matches else None
        with self.ctx.session_factory.begin() as session:
            self._log(
                session,
                job,
                [
                    self._entry(
                        job,
                        SERVICE_LOOKUP,
                        True,
                        request_text=call.request_text,
                        response_text=f"{'adopting service ' + str(found) if found else 'not found; creating'}\n"
                        f"{call.response_text}",
                    )
                ],
            )
        return found

    def _record_service(self, job: Job, service_id: int, *, adopted: bool, api: tuple[str, str] | None = None) -> None:
        with self.ctx.session_factory.begin() as session:
            row = session.execute(
                select(RevService).where(RevService.m2m_device_change_id == job.change_id)
            ).scalar_one()
            row.rev_service_id = service_id
            row.status = REV_SERVICE_CREATED
            row.modified_date = self.clock()
            entries = []
            if api is not None:
                entries.append(self._entry(job, SERVICE_API, True, request_text=api[0], response_text=api[1]))
            entries.append(
                self._entry(
                    job,
                    SERVICE_DB,
                    True,
                    request_text=f"RevService {row.id}: number {row.number}, Rev.io service {service_id}"
                    + (" (found after an unknown outcome)" if adopted else ""),
                )
            )
            self._log(session, job, entries)

    # ---------------------------------------------------------------------------- Rev.io products

    async def _products(self, job: Job, model: RevServiceRequest, service: Service, client: RevioClient) -> int:
        products = products_of(job.request)
        product_model = job.request.rev_service_product_create_model or model
        customer_id = int(str(model.rev_customer_id))
        adopted = service.adopted
        for product in products:
            await self._product(job, product_model, customer_id, service.service_id, product, client, adopted=adopted)
        return len(products)

    async def _product(
        self,
        job: Job,
        model: RevServiceRequest,
        customer_id: int,
        service_id: int,
        product: Product,
        client: RevioClient,
        *,
        adopted: bool = False,
    ) -> None:
        try:
            with self.ctx.session_factory.begin() as session:
                row = session.execute(
                    select(RevServiceProduct).where(
                        RevServiceProduct.m2m_device_change_id == job.change_id,
                        RevServiceProduct.position == product.position,
                    )
                ).scalar_one_or_none()
                if row is not None and row.status != "CREATING" and row.rev_service_product_id is not None:
                    return
                earlier = row is not None
                if row is None and adopted and self._adopt_product(session, job, customer_id, service_id, product):
                    return
                if row is None:
                    session.add(
                        RevServiceProduct(
                            m2m_device_change_id=job.change_id,
                            position=product.position,
                            rev_service_id=service_id,
                            rev_product_id=product.product_id,
                            rate=product.rate,
                            description=model.description,
                            rev_customer_id=str(customer_id),
                            package_id=model.rev_package_id or 0,
                            integration_authentication_id=job.auth_id,
                            status="CREATING",
                            created_date=self.clock(),
                        )
                    )
        except IntegrityError as exc:
            raise StepRetry("another worker is creating this service product") from exc

        if earlier:
            found = await self._find_product(job, client, service_id, product)
            if found is not None:
                self._record_product(job, product, found, adopted=True)
                return
        body: dict[str, Any] = {
            "service_id": service_id,
            "product_id": product.product_id,
            "rate": float(product.rate) if product.rate is not None else None,
            "prorate": model.prorate,
            "customer_id": customer_id,
            "quantity": 1,
        }
        if model.effective_date:
            body["effective_date"] = _date(model.effective_date)
        if model.activated_date:
            body["activated_date"] = _date(model.activated_date)
        if model.rev_package_id is not None:
            body["package_id"] = model.rev_package_id
        try:
            product_row_id, call = await client.create_service_product(body)
        except RevioRefused as exc:
            self._log_failure(job, PRODUCT_API, exc)
            raise _refusal(job, exc) from exc
        except RevioTransient as exc:
            self._log_failure(job, PRODUCT_API, exc)
            raise StepRetry(exc.message, exc.retry_after_s) from exc
        self._record_product(job, product, product_row_id, adopted=False, api=(call.request_text, call.response_text))

    def _adopt_product(self, session: Session, job: Job, customer_id: int, service_id: int, product: Product) -> bool:
        """On an adopted service: record a product it already carries (added by its creator) instead of adding
        it again. False when it has none of this product id left to adopt."""
        mine = select(RevServiceProduct.rev_service_product_id).where(
            RevServiceProduct.m2m_device_change_id == job.change_id,
            RevServiceProduct.rev_service_product_id.is_not(None),
        )
        existing = session.execute(
            select(RevServiceProduct.rev_service_product_id)
            .where(
                RevServiceProduct.rev_service_id == service_id,
                RevServiceProduct.rev_product_id == product.product_id,
                RevServiceProduct.status == "ACTIVE",
                RevServiceProduct.m2m_device_change_id != job.change_id,
                RevServiceProduct.rev_service_product_id.is_not(None),
                RevServiceProduct.rev_service_product_id.not_in(mine),
            )
            .order_by(RevServiceProduct.id)
            .limit(1)
        ).scalar_one_or_none()
        if existing is None:
            return False
        session.add(
            RevServiceProduct(
                m2m_device_change_id=job.change_id,
                position=product.position,
                rev_service_id=service_id,
                rev_service_product_id=existing,
                rev_product_id=product.product_id,
                rate=product.rate,
                rev_customer_id=str(customer_id),
                integration_authentication_id=job.auth_id,
                status=REV_SERVICE_ADOPTED,
                created_date=self.clock(),
            )
        )
        text = f"Rev.io service {service_id} already has product {product.product_id} ({existing}): adopted, not added"
        self._log(session, job, [self._entry(job, PRODUCT_DB, True, request_text=text)])
        return True

    async def _find_product(self, job: Job, client: RevioClient, service_id: int, product: Product) -> int | None:
        try:
            records, call = await client.find_service_products(service_id)
        except (RevioRefused, RevioTransient) as exc:
            self._log_failure(job, PRODUCT_LOOKUP, exc)
            if isinstance(exc, RevioCredentialsRefused):
                raise _refusal(job, exc) from exc
            raise StepRetry(f"cannot look the service product up before creating it again: {exc.message}") from exc
        with self.ctx.session_factory() as session:
            taken = set(
                session.execute(
                    select(RevServiceProduct.rev_service_product_id).where(
                        RevServiceProduct.rev_service_id == service_id,
                        RevServiceProduct.rev_service_product_id.is_not(None),
                    )
                ).scalars()
            )
        matches = [
            int(r["service_product_id"])
            for r in records
            if str(r.get("product_id")) == str(product.product_id)
            and isinstance(r.get("service_product_id"), int)
            and r["service_product_id"] not in taken
        ]
        found = min(matches) if matches else None
        with self.ctx.session_factory.begin() as session:
            self._log(
                session,
                job,
                [
                    self._entry(
                        job,
                        PRODUCT_LOOKUP,
                        True,
                        request_text=call.request_text,
                        response_text=f"{'adopting ' + str(found) if found else 'not found; creating'}\n"
                        f"{call.response_text}",
                    )
                ],
            )
        return found

    def _record_product(
        self, job: Job, product: Product, product_row_id: int, *, adopted: bool, api: tuple[str, str] | None = None
    ) -> None:
        with self.ctx.session_factory.begin() as session:
            row = session.execute(
                select(RevServiceProduct).where(
                    RevServiceProduct.m2m_device_change_id == job.change_id,
                    RevServiceProduct.position == product.position,
                )
            ).scalar_one()
            row.rev_service_product_id = product_row_id
            row.status = "ACTIVE"
            row.modified_date = self.clock()
            entries = []
            if api is not None:
                entries.append(self._entry(job, PRODUCT_API, True, request_text=api[0], response_text=api[1]))
            entries.append(
                self._entry(
                    job,
                    PRODUCT_DB,
                    True,
                    request_text=f"RevServiceProduct {row.id}: product {product.product_id} rate {product.rate} "
                    f"on Rev.io service {row.rev_service_id} → {product_row_id}"
                    + (" (found after an unknown outcome)" if adopted else ""),
                )
            )
            self._log(session, job, entries)

    def _log_failure(
        self, job: Job, description: str, exc: RevioRefused | RevioTransient, *, refused_service: bool = False
    ) -> None:
        """Log the failed call; ``refused_service``: Rev.io refused to create it, so this change's intent row
        no longer holds the number (it is REFUSED, outside the live-number index)."""
        with self.ctx.session_factory.begin() as session:
            if refused_service and not exc.outcome_unknown:
                session.execute(
                    update(RevService)
                    .where(RevService.m2m_device_change_id == job.change_id, RevService.status == REV_SERVICE_CREATING)
                    .values(status=REV_SERVICE_REFUSED, modified_date=self.clock())
                )
            self._log(
                session,
                job,
                [
                    self._entry(
                        job,
                        description,
                        False,
                        request_text=exc.request_text,
                        response_text=exc.response_text,
                        error_text=exc.message
                        + (" (outcome unknown: looked up before retrying)" if exc.outcome_unknown else ""),
                    )
                ],
            )

    # --------------------------------------------------------------------------------- settling

    def _settle(self, change_id: int, status: AdditionalStepStatus, details: str) -> None:
        with self.ctx.session_factory.begin() as session:
            jobs.settle(
                session,
                BILLING_STEP,
                change_id,
                owner=self.worker_id,
                status=status.value,
                values={_T.c.AdditionalStepDetails: details[:4000], BILLING_STEP.due_at: None},
            )
        self._refresh_bulk(change_id)

    def _refresh_bulk(self, change_id: int) -> None:
        """A settled step changes its bulk change's outcome (PROCESSED, PARTIAL …, ``HasErrors``)."""
        with self.ctx.session_factory() as session:
            bulk_id = session.execute(select(C.bulk_change_id).where(C.id == change_id)).scalar()
        if bulk_id is not None:
            refresh_status(self.ctx, int(bulk_id))

    def _release(self, change_id: int, reason: str) -> None:
        """Back to PENDING, due now, its claim's attempt given back: a call was not made for lack of time."""
        with self.ctx.session_factory.begin() as session:
            jobs.release(session, BILLING_STEP, [change_id], owner=self.worker_id)
            session.execute(
                update(C)
                .where(C.id == change_id)
                .values(additional_step_details=f"{reason}; carried on by the next run"[:4000])
                .execution_options(synchronize_session=False)
            )
        log.info("additional step put back: no time left for its Rev.io call", change_id=change_id)

    def _retry(self, change_id: int, reason: str, retry_after_s: float | None) -> None:
        with self.ctx.session_factory.begin() as session:
            attempts = session.execute(select(C.additional_step_attempt_count).where(C.id == change_id)).scalar() or 0
            decision = self.policy.decide(attempts, now=self.clock(), retry_after_s=retry_after_s, rng=self.ctx.rng)
            jobs.retry_later(
                session,
                BILLING_STEP,
                change_id,
                owner=self.worker_id,
                decision=decision,
                gave_up=S.ERROR.value,
                values={_T.c.AdditionalStepDetails: f"{reason} ({decision.describe()})"[:4000]},
            )
        if decision.give_up:
            self._refresh_bulk(change_id)
        else:
            log.info(
                "additional step will be retried",
                change_id=change_id,
                delay_s=round(decision.delay_s, 2),
                reason=reason,
            )
