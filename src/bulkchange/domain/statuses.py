"""Statuses: what an operator asks for, where one device change stands, and the local device status lookup.

Three vocabularies meet here and must not be mixed up:

* ``TargetStatus`` — the change's ``UpdateStatus`` (what the operator asked for, seed §4).
* ``ChangeStatus`` — the ``M2M_DeviceChange.Status`` of one device change (change-lifecycle.md).
* ``BulkStatus`` — the ``DeviceBulkChange.Status``, computed from its changes, never written onto them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import StrEnum


class TargetStatus(StrEnum):
    """The status an operator asks a device to reach (case-insensitive on input)."""

    INVENTORY = "inventory"
    PENDING_ACTIVATION = "pending activation"
    ACTIVE = "active"
    DEACTIVE = "deactive"
    SUSPEND = "suspend"
    RESTORE = "restore"
    RETIRED = "retired"

    @classmethod
    def parse(cls, raw: str | None) -> TargetStatus:
        """Read an operator's status, accepting any case, ``_`` / ``-`` for spaces and the aliases below.

        Raises ``ValueError`` naming every accepted spelling (and the likeliest one), so a refusal is
        actionable; a status a carrier knows but no account may ask for (``test ready``, ``purged``,
        ``replaced``) is refused with why.
        """
        known = _PARSED.get(raw or "")
        if known is not None:  # every stored change is read back through here: skip the spelling work
            return known
        text = " ".join((raw or "").strip().lower().replace("_", " ").replace("-", " ").split())
        text = _ALIASES.get(text, text)
        for member in cls:
            if member.value == text:
                if len(_PARSED) < 1024:  # bounded: the spellings an input file may use are unbounded
                    _PARSED[raw or ""] = member
                return member
        values = [m.value for m in cls]
        if text in NOT_SETTABLE:
            raise ValueError(
                f"status {raw!r} cannot be set by a bulk change: {NOT_SETTABLE[text]}; accepted: {', '.join(values)}"
            )
        # Only the statuses themselves are suggested: an alias can be one letter away from the opposite
        # status ("activate" is closer to "deactivate" than to "active").
        guess = difflib.get_close_matches(text, values, n=1, cutoff=0.6)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        by_target: dict[str, list[str]] = {}
        for alias, target in _ALIASES.items():
            by_target.setdefault(target, []).append(alias)
        aliases = "; ".join(f"{', '.join(names)} (= {target})" for target, names in by_target.items())
        raise ValueError(
            f"unknown status {raw!r}{hint}; accepted (any case, '_' or '-' for a space): {', '.join(values)}; "
            f"also: {aliases}"
        )

    @classmethod
    def spellings(cls) -> list[str]:
        """Every spelling ``parse`` accepts (any case): the statuses, then their aliases."""
        return [m.value for m in cls] + list(_ALIASES)


_PARSED: dict[str, TargetStatus] = {}  # spelling → status, for spellings already read

_ALIASES = {
    "deactivated": "deactive",
    "deactivate": "deactive",
    "activation ready": "pending activation",
    "activated": "active",
    "suspended": "suspend",
    "retire": "retired",
}

NOT_SETTABLE: dict[str, str] = {
    "test ready": "TEST_READY is set by the carrier's operator (free test traffic), not by an account",
    "purged": "PURGED is permanent (the SIM can never come back) and is an administrator's action at the carrier",
    "replaced": "REPLACED is set by the carrier itself when a SIM is swapped",
}
"""Control Center statuses an operator may name but no bulk change sets, with the reason it is refused."""


class ChangeStatus(StrEnum):
    """Where one device change stands. The first four are in flight; the rest are terminal.

    ``SCHEDULED``: accepted by the carrier, which makes the change at a later date (a Control Center
    EffectiveDate); verified once that date has passed (``NextAttemptAt``).
    """

    READY = "READY"
    SENDING = "SENDING"
    AWAITING_RESULT = "AWAITING_RESULT"
    SCHEDULED = "SCHEDULED"
    PROCESSED = "PROCESSED"
    ERROR = "ERROR"
    API_FAILED = "API_FAILED"
    ACTIVATION_UNVERIFIED = "ACTIVATION_UNVERIFIED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_CHANGE_STATUSES

    @property
    def has_errors(self) -> bool:
        return self.is_terminal and self is not ChangeStatus.PROCESSED


TERMINAL_CHANGE_STATUSES = frozenset(
    {
        ChangeStatus.PROCESSED,
        ChangeStatus.ERROR,
        ChangeStatus.API_FAILED,
        ChangeStatus.ACTIVATION_UNVERIFIED,
        ChangeStatus.NEEDS_REVIEW,
        ChangeStatus.CANCELLED,
    }
)
IN_FLIGHT_CHANGE_STATUSES = frozenset(set(ChangeStatus) - TERMINAL_CHANGE_STATUSES)
AT_CARRIER_VALUES = (ChangeStatus.SENDING.value, ChangeStatus.AWAITING_RESULT.value, ChangeStatus.SCHEDULED.value)
"""Changes that may be at the carrier (being sent, or accepted and awaiting their result, now or at a later
date): never cancelled — the carrier has them — and what a paused bulk change still finishes."""


class BulkStatus(StrEnum):
    """The bulk change's status: computed from its device changes and their additional steps
    (``compute_bulk_outcome``), never written onto them.

    NEW, PROCESSING, PROCESSED and ERROR are the seed's names; PARTIAL, CANCELLED, PAUSED and SCHEDULED are
    ours (docs/operations.md).
    """

    NEW = "NEW"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    PARTIAL = "PARTIAL"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    PAUSED = "PAUSED"
    SCHEDULED = "SCHEDULED"


FINISHED_BULK_STATUSES = frozenset({BulkStatus.PROCESSED, BulkStatus.PARTIAL, BulkStatus.ERROR, BulkStatus.CANCELLED})
"""Where a bulk change may end. ERROR is also the status of a bulk-level failure with unfinished changes
(resumable): whether an ERROR bulk change is finished is told by its changes, not by the word alone."""
ACTIVE_BULK_STATUSES = frozenset({BulkStatus.NEW, BulkStatus.PROCESSING, BulkStatus.SCHEDULED, BulkStatus.PAUSED})
"""Bulk changes that still have work (a paused one only finishes what is already at the carrier)."""


@dataclass(frozen=True)
class StepCounts:
    """A bulk change's additional steps (billing, customer rate plan) by status; NULL ones are not counted."""

    pending: int = 0  # PENDING or PROCESSING: still to run
    processed: int = 0
    error: int = 0


@dataclass(frozen=True)
class BulkOutcome:
    """What the bulk change says: its status, whether anything failed, and the counts behind it."""

    status: BulkStatus
    has_errors: bool
    details: str
    finished: bool


def compute_bulk_outcome(
    counts: dict[ChangeStatus, int],
    steps: StepCounts = StepCounts(),
    *,
    bulk_failure: bool = False,
    paused: bool = False,
) -> BulkOutcome:
    """The bulk status from every change *and* its additional step.

    * ERROR while changes are unfinished after a bulk-level failure (credentials refused: resumable);
    * PAUSED while paused with changes unfinished (in-flight ones still finish);
    * SCHEDULED when every unfinished change is SCHEDULED (accepted by the carrier for a later date);
      PROCESSING while anything else is unfinished, additional steps included;
    * once everything is settled: PROCESSED when every change and every additional step succeeded,
      CANCELLED when nothing failed but some changes were cancelled, PARTIAL when some failed and some were
      done, ERROR when some failed and none was done.

    A failed change is any terminal status but PROCESSED and CANCELLED; a PROCESSED change whose
    additional step ended ERROR is failed too (``has_errors``), and is never counted as PROCESSED in
    ``details``.
    """
    in_flight = sum(n for s, n in counts.items() if not s.is_terminal)
    failed_changes = sum(n for s, n in counts.items() if s.is_terminal and s not in _NOT_FAILED)
    failed = failed_changes + steps.error
    scheduled = counts.get(ChangeStatus.SCHEDULED, 0)
    details = _details(counts, steps)
    has_errors = failed > 0 or bulk_failure
    if in_flight and bulk_failure:
        return BulkOutcome(BulkStatus.ERROR, True, details, False)
    if in_flight and paused:
        return BulkOutcome(BulkStatus.PAUSED, has_errors, details, False)
    if in_flight and scheduled >= in_flight:
        return BulkOutcome(BulkStatus.SCHEDULED, has_errors, details, False)
    if in_flight or steps.pending:
        return BulkOutcome(BulkStatus.PROCESSING, has_errors, details, False)
    done = counts.get(ChangeStatus.PROCESSED, 0) - steps.error
    if failed == 0:
        status = BulkStatus.CANCELLED if counts.get(ChangeStatus.CANCELLED, 0) else BulkStatus.PROCESSED
    else:
        status = BulkStatus.PARTIAL if done > 0 else BulkStatus.ERROR
    return BulkOutcome(status, has_errors, details, True)


_NOT_FAILED = frozenset({ChangeStatus.PROCESSED, ChangeStatus.CANCELLED})


def _details(counts: dict[ChangeStatus, int], steps: StepCounts) -> str:
    """``"24 PROCESSED, 1 PROCESSED with billing ERROR, 30 NEEDS_REVIEW"``: every change counted once."""
    parts: list[str] = []
    for status in ChangeStatus:
        n = counts.get(status, 0)
        if status is ChangeStatus.PROCESSED:
            n -= steps.error + steps.pending
        if n > 0:
            parts.append(f"{n} {status.value}")
        if status is ChangeStatus.PROCESSED:
            if steps.pending:
                parts.append(f"{steps.pending} PROCESSED with billing pending")
            if steps.error:
                parts.append(f"{steps.error} PROCESSED with billing ERROR")
    return ", ".join(parts)


def compute_bulk_status(counts: dict[ChangeStatus, int], *, bulk_failure: bool = False) -> BulkStatus:
    """The bulk status from its changes' counts alone (``compute_bulk_outcome`` without additional steps)."""
    return compute_bulk_outcome(counts, bulk_failure=bulk_failure).status


class DeviceStatusId:
    """Ids of the ``DeviceStatus`` lookup table.

    8 (active) and 15 (pending activation) are the original's values (original-behaviour.md §7), kept so an
    existing deployment's rows mean the same; the others are ours.
    """

    ACTIVE = 8
    PENDING_ACTIVATION = 15
    INVENTORY = 16
    DEACTIVE = 17
    SUSPEND = 18
    UNKNOWN = 19
    RETIRED = 20


DEVICE_STATUS_NAMES: dict[int, str] = {
    DeviceStatusId.ACTIVE: "active",
    DeviceStatusId.PENDING_ACTIVATION: "pending activation",
    DeviceStatusId.INVENTORY: "inventory",
    DeviceStatusId.DEACTIVE: "deactive",
    DeviceStatusId.SUSPEND: "suspend",
    DeviceStatusId.UNKNOWN: "unknown",
    DeviceStatusId.RETIRED: "retired",
}

# The local device status a successful change leaves behind.
RESULT_DEVICE_STATUS: dict[TargetStatus, int] = {
    TargetStatus.INVENTORY: DeviceStatusId.INVENTORY,
    TargetStatus.PENDING_ACTIVATION: DeviceStatusId.PENDING_ACTIVATION,
    TargetStatus.ACTIVE: DeviceStatusId.ACTIVE,
    TargetStatus.DEACTIVE: DeviceStatusId.DEACTIVE,
    TargetStatus.SUSPEND: DeviceStatusId.SUSPEND,
    TargetStatus.RESTORE: DeviceStatusId.ACTIVE,
    TargetStatus.RETIRED: DeviceStatusId.RETIRED,
}
