"""Submitting a bulk change: read the rows, validate every one, then create everything or nothing.

A row that cannot succeed is refused here, not discovered later (decisions.md): bad ICCID or IMEI, unknown
status, a value the target status needs left out (the carrier's ``RowRules.needs``), duplicates, a device of another
provider, a device already in another unfinished change, a transition the matrix forbids.

Every lookup is confined to the tenant of the bulk change's service provider: another tenant's devices,
customer rate plans and Rev.io credentials are answered exactly as ones that do not exist.

The rows come from ``open_input`` (a file: CSV, JSON or xlsx, through ``bulkchange.input``) or are any
iterable of dicts (a JSON request body, a retry). A target status that is none of ours and a header that
lacks what that status needs are reported once, before any row is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from bulkchange.carrier.port import Carrier
from bulkchange.domain.carriers import CarrierName
from bulkchange.domain.statuses import (
    DEVICE_STATUS_NAMES,
    IN_FLIGHT_CHANGE_STATUSES,
    RESULT_DEVICE_STATUS,
    BulkStatus,
    ChangeStatus,
    TargetStatus,
)
from bulkchange.engine.additional_step_checks import AdditionalStepChecker
from bulkchange.engine.context import default_carriers
from bulkchange.engine.outbox import add_wakeup, send_after_commit
from bulkchange.engine.row_rules import RowProblem, ValidRow, check_row, rules_for
from bulkchange.engine.rowrules_model import RowRules
from bulkchange.input import InputProblem, Limits, Source, Table, open_table, records
from bulkchange.queue.base import Transport
from bulkchange.queue.message import BulkChangeMessage
from bulkchange.settings import Settings, get_settings
from bulkchange.store.constraints import is_deadlock, violates
from bulkchange.store.core import insert_rows
from bulkchange.store.tables import (
    UNFINISHED_CHANGE_INDEX,
    Device,
    DeviceBulkChange,
    M2MDeviceChange,
    ServiceProvider,
    utcnow,
)

log = structlog.get_logger("bulkchange.submit")

#: Rows checked and inserted together: one query of each database check and one INSERT per chunk.
CHUNK_ROWS = 1000
#: Problems a report keeps in full; the others are only counted, so refusing a large file of bad rows stays
#: small in memory and in the answer (the first ones show what to fix).
MAX_PROBLEMS_KEPT = 1000


@dataclass
class SubmitReport:
    """Why a submission was refused (no problem at all means accepted).

    ``problems`` holds the first ``MAX_PROBLEMS_KEPT`` problems; ``omitted`` counts the ones after them.
    """

    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0
    omitted: int = 0
    file_refused: bool = False  # refused as a whole (e.g. too many rows): no row was fully checked

    @property
    def ok(self) -> bool:
        return not self.problems and not self.omitted

    @property
    def problem_count(self) -> int:
        return len(self.problems) + self.omitted

    def add(self, problems: list[RowProblem]) -> None:
        """Keep the first problems in full, count the rest."""
        room = max(0, MAX_PROBLEMS_KEPT - len(self.problems))
        self.problems.extend(problems[:room])
        self.omitted += max(0, len(problems) - room)

    def refuse_file(self, message: str, *, field: str = "file") -> None:
        """The file as a whole is refused: that one problem replaces any found in its rows so far."""
        self.refuse([RowProblem(0, field, message)])

    def refuse(self, problems: list[RowProblem]) -> None:
        """Refused before its rows were checked (the status, the header): these problems are the answer."""
        self.problems = problems[:MAX_PROBLEMS_KEPT]
        self.omitted = 0
        self.file_refused = True


class SubmissionRefused(Exception):
    def __init__(self, report: SubmitReport) -> None:
        super().__init__(f"{report.problem_count} problem(s) in {report.rows} row(s); nothing was created")
        self.report = report

    def first_problem(self) -> str:
        """The first problem in one line (``"<ICCID> <field>: <message>"``), for a one-line refusal; ``""``
        when the report holds none."""
        if not self.report.problems:
            return ""
        first = self.report.problems[0]
        return f"{first.iccid or ''} {first.field}: {first.message}".strip()


Numbered = tuple[int, Any, tuple[InputProblem, ...]]


@dataclass(frozen=True)
class CheckedChunk:
    """One chunk of input rows after every check: what may be created, and every problem of these rows."""

    rows: list[tuple[int, Any]]  # (line number, the row as read)
    valid: list[ValidRow]
    problems: list[RowProblem]  # all of them (the report may keep fewer)


@dataclass(frozen=True)
class _Parsed:
    number: int
    row: ValidRow


@dataclass
class _DatabaseFacts:
    """What the database says about one chunk's ICCIDs."""

    current: dict[str, int | None] = field(default_factory=dict)  # ours: ICCID → DeviceStatusId
    # Another provider of the same tenant: ICCID → its id. Another tenant's devices are never read: they
    # are answered exactly as unknown devices (no existence, no provider id leaks across tenants).
    foreign: dict[str, int] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)  # in an unfinished change: ICCID → bulk change id


def carrier_for(provider: ServiceProvider | None) -> Carrier:
    """The carrier adapter of a provider (ThingSpace for an unknown one: its rows are refused anyway)."""
    carriers = default_carriers()
    if provider is None:
        return carriers[CarrierName.THINGSPACE.value]
    try:
        return carriers[CarrierName.of_integration(provider.integration_id).value]
    except ValueError:
        return carriers[CarrierName.THINGSPACE.value]


class RowValidator:
    """Checks rows chunk by chunk, keeping across chunks only what must span the whole file.

    That is the ICCID → first row number map of the duplicate check and the lookup tables of the additional
    steps; everything else (parsed requests, Device rows) lives only as long as its chunk, so memory does not
    grow with the file beyond that map.
    """

    def __init__(
        self, session: Session, *, status: TargetStatus, service_provider_id: int, ignore_current_status: bool
    ) -> None:
        self.session = session
        self.status = status
        self.service_provider_id = service_provider_id
        self.ignore_current_status = ignore_current_status
        self.first_row: dict[str, int] = {}
        # Everything a row is checked against is the tenant's own (an unknown provider has no tenant: nothing).
        provider = session.get(ServiceProvider, service_provider_id)
        self.tenant_id = provider.tenant_id if provider is not None else None
        self.carrier = carrier_for(provider)
        self.additional_steps = AdditionalStepChecker(session, self.tenant_id)

    def check(self, chunk: list[Numbered]) -> CheckedChunk:
        """Every check of these rows: first each row on its own, then the survivors against the database."""
        problems: list[RowProblem] = []
        parsed: list[_Parsed] = []
        for number, raw, found in chunk:
            row, row_problems = self._check_row(number, raw, found)
            problems.extend(row_problems)
            if row is not None:
                parsed.append(_Parsed(number, row))
        valid = self._check_against_database(parsed, problems)
        return CheckedChunk([(number, raw) for number, raw, _found in chunk], valid, problems)

    def _check_row(
        self, number: int, raw: Any, found: tuple[InputProblem, ...]
    ) -> tuple[ValidRow | None, list[RowProblem]]:
        """Every problem the row has on its own (the reader's too), and the duplicate check, which only
        needs the map."""
        checked = check_row(
            number, raw, status=self.status, ignore_current_status=self.ignore_current_status, carrier=self.carrier
        )
        iccid = checked.iccid
        problems = [RowProblem(p.line, p.column, p.message, iccid) for p in found] + checked.problems
        if iccid and iccid in self.first_row:
            problems.append(RowProblem(number, "ICCID", f"duplicate of row {self.first_row[iccid]}", iccid))
        elif iccid:
            self.first_row[iccid] = number
        return (replace(checked.row, row=number) if checked.row is not None and not problems else None), problems

    def _check_against_database(self, parsed: list[_Parsed], problems: list[RowProblem]) -> list[ValidRow]:
        """Provider, busy device, transition and additional-step checks: one query of each per chunk."""
        facts = self._facts([p.row.request.request.iccid for p in parsed])
        kept: list[ValidRow] = []
        for p in parsed:
            req = p.row.request
            iccid = req.request.iccid
            if iccid in facts.foreign:
                why = f"device belongs to another service provider ({facts.foreign[iccid]})"
                problems.append(RowProblem(p.number, "ICCID", why, iccid))
                continue
            if iccid in facts.busy:
                problems.append(busy_problem(p.number, iccid, facts.busy[iccid]))
                continue
            status_id = facts.current.get(iccid)
            current = DEVICE_STATUS_NAMES.get(status_id) if status_id else None
            ignore = req.is_ignore_current_status
            if problem := self.carrier.transition_problem(current, p.row.target, ignore_current_status=ignore):
                problems.append(RowProblem(p.number, "status", problem, iccid))
                continue
            # Additional steps: customer rate plan and Rev.io billing fields, checked up front.
            checked, step_problems = self.additional_steps.check(req)
            if step_problems:
                problems.extend(RowProblem(p.number, f, m, iccid) for f, m in step_problems)
                continue
            kept.append(ValidRow(checked, p.row.target, p.row.plan, p.number) if checked is not req else p.row)
        return kept

    def _facts(self, iccids: list[str]) -> _DatabaseFacts:
        """The local devices and unfinished changes of ``iccids`` (columns only: no ORM objects kept).

        The changes this submission inserted itself never match: a repeated ICCID is refused as a duplicate
        before it gets here.
        """
        facts = _DatabaseFacts()
        if not iccids:
            return facts
        for iccid, provider_id, status_id in self.session.execute(
            select(Device.iccid, Device.service_provider_id, Device.device_status_id)
            .join(ServiceProvider, ServiceProvider.id == Device.service_provider_id)
            .where(Device.iccid.in_(iccids), Device.is_deleted.is_(False), ServiceProvider.tenant_id == self.tenant_id)
        ).all():
            if provider_id == self.service_provider_id:
                facts.current[iccid] = status_id
            else:
                facts.foreign[iccid] = provider_id
        facts.busy = self._busy(iccids)
        return facts

    def _busy(self, iccids: list[str]) -> dict[str, int]:
        """The early, friendly check: devices already held by an unfinished change (the index is the rule)."""
        return unfinished_holders(self.session, self.service_provider_id, iccids)


def unfinished_holders(session: Session, service_provider_id: int, iccids: list[str]) -> dict[str, int]:
    """ICCID → the bulk change whose unfinished change holds the device, for those of ``iccids`` held.

    Reads what ``UX_M2M_DeviceChange_Unfinished`` covers (the same provider, an in-flight status).
    """
    if not iccids:
        return {}
    C = M2MDeviceChange
    rows = session.execute(
        select(C.iccid, C.bulk_change_id).where(
            C.service_provider_id == service_provider_id,
            C.iccid.in_(iccids),
            C.status.in_([s.value for s in IN_FLIGHT_CHANGE_STATUSES]),
        )
    ).all()
    return {iccid: bulk_id for iccid, bulk_id in rows}


def busy_problem(row: int, iccid: str, bulk_change_id: int) -> RowProblem:
    """The refusal of a row whose device is in another bulk change's unfinished change."""
    return RowProblem(row, "ICCID", f"device already has an unfinished change in bulk change {bulk_change_id}", iccid)


def _numbered_chunks(rows: Iterable[Numbered], size: int, *, stop_after: int) -> Iterator[list[Numbered]]:
    """Rows in lists of ``size``; never pulls more than ``stop_after`` rows from ``rows``."""
    chunk: list[Numbered] = []
    for numbered in islice(rows, stop_after):
        chunk.append(numbered)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _numbered(rows: Iterable[Any] | Table) -> Iterator[Numbered]:
    """(line number, row, what the reader found wrong with it): a table's own numbers, else 1, 2, …"""
    if isinstance(rows, Table):
        return ((row.line, row.cells, row.problems) for row in rows)
    return ((number, raw, ()) for number, raw in enumerate(rows, start=1))


def _before_rows(
    rows: Iterable[Any] | Table, status: str, ignore_current_status: bool, rules: RowRules
) -> TargetStatus | list[RowProblem]:
    """The target status, or the problems that refuse the input before any row is read: a status that is
    none of ours (one problem, naming every accepted spelling), a header that is no header, names unknown
    columns or lacks a column the status needs (each once)."""
    try:
        target = TargetStatus.parse(status)
    except ValueError as exc:
        return [RowProblem(0, "status", str(exc))]
    if not isinstance(rows, Table):
        return target
    found = list(rows.problems)
    if not found and not any(rows.has_column(name) for name in rules.per_row_rule_columns):
        found = rows.missing(rules.needs_for(target, ignore_current_status=ignore_current_status))
    return [RowProblem(p.line, p.column, p.message) for p in found] or target


def checked_chunks(
    session: Session,
    rows: Iterable[Any] | Table,
    report: SubmitReport,
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool,
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[CheckedChunk]:
    """Read ``rows`` (a ``Table`` from ``open_input``, or any iterable of dicts) and check it chunk by chunk.

    Each chunk is yielded once checked, so a caller can act on it (insert it, show it) and let it go. The
    problems go into ``report`` as they are found and ``report.rows`` counts the rows read. A wrong status
    or a header problem refuses the input before its first row is read. A file with more than ``max_rows``
    rows (``BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE``; a ``Table`` also stops there itself) is refused as soon as
    row ``max_rows + 1`` is read — the rest is never pulled — and then the report holds that one file-level
    problem only: the file must be split, and its parts will be checked again.
    """
    if max_rows is None:
        max_rows = get_settings().max_rows_per_bulk_change
    rules = rules_for(carrier_for(session.get(ServiceProvider, service_provider_id)).name)
    target = _before_rows(rows, status, ignore_current_status, rules)
    if not isinstance(target, TargetStatus):
        report.refuse(target)
        return
    validator = RowValidator(
        session, status=target, service_provider_id=service_provider_id, ignore_current_status=ignore_current_status
    )
    for chunk in _numbered_chunks(_numbered(rows), chunk_rows, stop_after=max_rows + 1):
        report.rows += len(chunk)
        if report.rows > max_rows:
            report.refuse_file(
                f"at least {report.rows:,} rows; the limit per bulk change is {max_rows:,} "
                "(BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE): split the file"
            )
            return
        checked = validator.check(chunk)
        report.add(checked.problems)
        yield checked
    if report.rows == 0:
        report.add([RowProblem(0, "file", "no rows")])


def validate_rows(
    session: Session,
    rows: Iterable[Any] | Table,
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool,
    max_rows: int | None = None,
) -> tuple[list[ValidRow], SubmitReport]:
    """Check every row; return the valid ones and a report of every problem (all rows are checked).

    This keeps every valid row: for a whole-file answer on small inputs. ``create_bulk_change`` and the
    preview use ``checked_chunks`` and keep one chunk at a time.
    """
    report = SubmitReport()
    valid: list[ValidRow] = []
    for chunk in checked_chunks(
        session,
        rows,
        report,
        status=status,
        service_provider_id=service_provider_id,
        ignore_current_status=ignore_current_status,
        max_rows=max_rows,
    ):
        valid.extend(chunk.valid)
    if report.file_refused:
        valid = []
    return valid, report


def create_bulk_change(
    session: Session,
    transport: Transport,
    rows: Iterable[Any] | Table,
    *,
    status: str,
    service_provider_id: int,
    ignore_current_status: bool = False,
    created_by: str = "bulkchange",
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Validate and create the bulk change, its device changes and its first message; return its id.

    ``rows`` may be any iterable (a generator over a file): it is read once, a chunk at a time, and each
    chunk is checked and inserted before the next is read, so memory stays flat in the size of the file.
    Everything happens in one transaction: when any row anywhere is refused, it is rolled back and
    ``SubmissionRefused`` is raised with the report (nothing created). Any other exception (e.g. the reader
    refusing the file midway) also rolls back and propagates. The wake-up message is written in the same
    transaction and sent after the commit; a queue that refuses it then does not fail the call.

    One unfinished change per device is the database's rule (``UX_M2M_DeviceChange_Unfinished``), taken by
    each chunk's INSERT: a submission that races another for the same devices and loses is refused row by
    row like one that came second (``_insert_chunk``), never half-created.
    """
    provider = session.get(ServiceProvider, service_provider_id)
    if provider is None or provider.is_deleted:
        raise SubmissionRefused(
            SubmitReport([RowProblem(0, "service_provider", f"no service provider {service_provider_id}")])
        )
    carrier = carrier_for(provider)
    now = utcnow()
    report = SubmitReport()
    bulk: DeviceBulkChange | None = None
    created = 0
    try:
        for chunk in checked_chunks(
            session,
            rows,
            report,
            status=status,
            service_provider_id=service_provider_id,
            ignore_current_status=ignore_current_status,
            max_rows=max_rows,
            chunk_rows=chunk_rows,
        ):
            if not report.ok or not chunk.valid:
                continue  # something was refused: nothing will be kept, only the report is completed
            if bulk is None:  # created with the first rows to insert (a file refused early never writes)
                bulk = _new_bulk_change(session, provider.tenant_id, service_provider_id, created_by, now)
            records = _change_records(bulk.id, service_provider_id, chunk.valid, created_by, now, carrier)
            if lost := _insert_chunk(session, service_provider_id, chunk.valid, records):
                report.add(lost)  # the rest of the file is still checked: the whole report, as for a second comer
                continue
            created += len(chunk.valid)
        if not report.ok or bulk is None:
            raise SubmissionRefused(report)
        bulk.status_details = f"{created} READY"
        # The wake-up is written with the bulk change (engine.outbox): it exists iff the bulk change does.
        wakeup = add_wakeup(
            session, BulkChangeMessage(bulk_change_id=bulk.id, service_provider_id=service_provider_id), now=now
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    # After the commit nothing may fail the submission: the bulk change exists. If the queue does not take
    # the wake-up now, the row stays pending and the running workers relay it (``wakeup_pending`` tells).
    send_after_commit(session, transport, wakeup.id)
    return bulk.id


def _new_bulk_change(
    session: Session, tenant_id: int, service_provider_id: int, created_by: str, now: datetime
) -> DeviceBulkChange:
    """The DeviceBulkChange row, flushed so its changes can name it (its counts are written at the end)."""
    bulk = DeviceBulkChange(
        tenant_id=tenant_id,
        service_provider_id=service_provider_id,
        change_request_type="StatusUpdate",
        status=BulkStatus.NEW.value,
        created_by=created_by,
        created_date=now,
        next_wake_at=now,
        status_details="0 READY",
    )
    session.add(bulk)
    session.flush()
    return bulk


#: How often one chunk's INSERT is tried when it collides with a holder that is gone by the time it is read.
INSERT_ATTEMPTS = 3


def _insert_chunk(
    session: Session, service_provider_id: int, valid: list[ValidRow], records: list[dict[str, Any]]
) -> list[RowProblem]:
    """INSERT one chunk's changes under a savepoint; return the refusals if other submissions hold its devices.

    The loser of a race hears of it here: its INSERT fails on the unique index (on PostgreSQL once the
    winner has committed), the savepoint is rolled back (this transaction stays usable, and rolls back as a
    whole when the refusal is raised), and the holders — committed by now — are read to name each row, as
    the check before the insert does for a submission that came second. A deadlock with a submission
    inserting overlapping devices in another order is treated alike. Any other integrity error propagates.
    """
    for _ in range(INSERT_ATTEMPTS):
        try:
            with session.begin_nested():
                insert_rows(session, M2MDeviceChange, records)
            return []
        except IntegrityError as exc:
            if not violates(exc, UNFINISHED_CHANGE_INDEX):
                raise
        except OperationalError as exc:
            if not is_deadlock(exc):
                raise
        held = unfinished_holders(session, service_provider_id, [r.request.request.iccid for r in valid])
        if held:
            log.info(
                "submission lost a race for devices",
                service_provider_id=service_provider_id,
                devices=len(held),
                held_by=sorted(set(held.values())),
            )
            return [
                busy_problem(r.row, iccid, held[iccid]) for r in valid if (iccid := r.request.request.iccid) in held
            ]
    return [
        RowProblem(
            0,
            "file",
            "another submission is changing some of these devices at this moment; nothing was created: "
            "submit again once it is accepted",
        )
    ]


def _change_records(
    bulk_id: int, service_provider_id: int, valid: list[ValidRow], created_by: str, now: datetime, carrier: Carrier
) -> list[dict[str, Any]]:
    """One chunk's M2M_DeviceChange rows, as bound parameters of one INSERT."""
    records = []
    for row in valid:
        req = row.request
        req_json = req.model_copy(update={"post_update_status_id": RESULT_DEVICE_STATUS[row.target]}).to_json()
        records.append(
            {
                "bulk_change_id": bulk_id,
                "service_provider_id": service_provider_id,
                "iccid": req.request.iccid,
                "imei": req.request.imei,
                "device_identifier": req.request.iccid,
                "status": ChangeStatus.READY.value,
                "change_request": req_json,
                "target_status": row.target.value,
                "plan": ",".join(row.plan),
                "step_index": 0,
                "attempt_count": 0,
                "batch_key": carrier.batch_key(row.plan[0], req),
                "created_by": created_by,
                "created_date": now,
                "is_processed": False,
                "has_errors": False,
                "is_active": True,
                "is_deleted": False,
                "solo": False,
            }
        )
    return records


# ------------------------------------------------------------------------------------------------ input


def input_limits(settings: Settings) -> Limits:
    """The reader's limits: ``BULKCHANGE_MAX_UPLOAD_BYTES`` and ``BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE``."""
    return Limits(max_bytes=settings.max_upload_bytes, max_rows=settings.max_rows_per_bulk_change)


def input_carrier(session: Session, service_provider_id: int) -> str:
    """The carrier whose columns a file for this provider is read with (ThingSpace for an unknown provider:
    its submission is refused anyway)."""
    return carrier_for(session.get(ServiceProvider, service_provider_id)).name


def open_input(
    source: Source, *, settings: Settings, filename: str | None = None, carrier: str = CarrierName.THINGSPACE.value
) -> Table:
    """An input file (a path, an upload's stream, bytes) as a table of ``carrier``'s rows, within the limits.

    Raises ``bulkchange.input.InputRefused`` when it cannot be read at all; reading its rows may raise it too
    (the file is read as it is submitted), and nothing is then created.
    """
    columns = rules_for(carrier).columns
    return open_table(source, columns=columns, limits=input_limits(settings), filename=filename)


def input_rows(rows: Iterable[Any], *, settings: Settings, carrier: str = CarrierName.THINGSPACE.value) -> Table:
    """Rows already parsed (a JSON request body), read like a JSON file's: unknown keys reported once."""
    return records(rows, columns=rules_for(carrier).columns, limits=input_limits(settings))
