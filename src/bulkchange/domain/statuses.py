"""Statuses: what an operator asks for, where one device change stands, and the local device status lookup.

Three vocabularies meet here and must not be mixed up:

* ``TargetStatus`` — the change's ``UpdateStatus`` (what the operator asked for, seed §4).
* ``ChangeStatus`` — the ``M2M_DeviceChange.Status`` of one device change (change-lifecycle.md).
* ``BulkStatus`` — the ``DeviceBulkChange.Status``, computed from its changes, never written onto them.
"""

from __future__ import annotations

import difflib
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
        text = " ".join((raw or "").strip().lower().replace("_", " ").replace("-", " ").split())
        text = _ALIASES.get(text, text)
        for member in cls:
            if member.value == text:
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


class BulkStatus(StrEnum):
    """The bulk change's status: computed from its device changes (see ``compute_bulk_status``)."""

    NEW = "NEW"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    ERROR = "ERROR"


def compute_bulk_status(counts: dict[ChangeStatus, int], *, bulk_failure: bool = False) -> BulkStatus:
    """The bulk status from its changes' counts.

    ``ERROR`` is reserved for a bulk-level failure (e.g. credentials refused) and is kept only while
    changes remain unfinished: those stay resumable. Otherwise ``PROCESSING`` while any change is in
    flight, then ``PROCESSED`` (per-device failures show in the counts and ``HasErrors``).
    """
    in_flight = sum(n for s, n in counts.items() if not s.is_terminal)
    if in_flight and bulk_failure:
        return BulkStatus.ERROR
    if in_flight:
        return BulkStatus.PROCESSING
    return BulkStatus.PROCESSED


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
