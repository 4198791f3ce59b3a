"""The list page's and the detail page's filters: query parameters checked into a frozen query (an unknown
value is a 400 naming it), which gives back its parameters and the services' filter."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query

from bulkchange.api.schemas import MAX_ID
from bulkchange.carrier.catalogue import all_steps
from bulkchange.domain.statuses import BulkStatus, ChangeStatus, TargetStatus
from bulkchange.engine.additional_step import AdditionalStepStatus
from bulkchange.services import bulk_changes as svc

PageNumber = Annotated[int, Query(ge=1, le=MAX_ID)]

CHANGE_STATUSES = [s.value for s in ChangeStatus]
_EXTRA_STEPS = {s.value for s in AdditionalStepStatus} | {svc.NO_ADDITIONAL_STEP}
_STEPS = frozenset(all_steps())


def _bad(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


def _choice(value: str, allowed: Collection[str], what: str) -> str:
    """``value`` upper-cased when it is one of ``allowed`` ("" stays ""), else a 400."""
    text = value.strip().upper()
    if text and text not in allowed:
        raise _bad(f"unknown {what} {value!r}")
    return text


def _day(value: str, what: str) -> date | None:
    try:
        return date.fromisoformat(value.strip()) if value.strip() else None
    except ValueError as exc:
        raise _bad(f"{what}: not a date (YYYY-MM-DD): {value!r}") from exc


def _params(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v not in (None, "")}


@dataclass(frozen=True)
class ListQuery:
    """The list page's filters, as the form sends them."""

    status: str = ""
    target: str = ""
    provider: int | None = None
    created_from: date | None = None
    created_to: date | None = None
    file: str = ""
    by: str = ""
    page: int = 1

    def params(self) -> dict[str, str]:
        """The filters as query parameters (without the page)."""
        return _params(
            {
                "status": self.status,
                "target": self.target,
                "provider": self.provider,
                "created_from": self.created_from.isoformat() if self.created_from else None,
                "created_to": self.created_to.isoformat() if self.created_to else None,
                "file": self.file,
                "by": self.by,
            }
        )

    @property
    def filtered(self) -> bool:
        return bool(self.params())

    def filter(self) -> svc.BulkChangeFilter:
        return svc.BulkChangeFilter(
            status=self.status or None,
            target_status=self.target or None,
            service_provider_id=self.provider,
            created_from=self.created_from,
            created_to=self.created_to,
            file_name=self.file or None,
            created_by=self.by or None,
        )


def list_query(
    status: Annotated[str, Query(max_length=30)] = "",
    target: Annotated[str, Query(max_length=50)] = "",
    provider: Annotated[str, Query(max_length=12)] = "",
    created_from: Annotated[str, Query(max_length=10)] = "",
    created_to: Annotated[str, Query(max_length=10)] = "",
    file: Annotated[str, Query(max_length=255)] = "",
    by: Annotated[str, Query(max_length=100)] = "",
    page: PageNumber = 1,
) -> ListQuery:
    """The list's query parameters, checked (an unknown value is a 400 naming it)."""
    try:
        target_status = TargetStatus.parse(target).value if target.strip() else ""
    except ValueError as exc:
        raise _bad(str(exc)) from exc
    if provider.strip() and not provider.strip().isdigit():
        raise _bad(f"provider: not an id: {provider!r}")
    return ListQuery(
        status=_choice(status, {s.value for s in BulkStatus}, "status"),
        target=target_status,
        provider=int(provider) if provider.strip() else None,
        created_from=_day(created_from, "created_from"),
        created_to=_day(created_to, "created_to"),
        file=file.strip(),
        by=by.strip(),
        page=page,
    )


@dataclass(frozen=True)
class DetailQuery:
    """One bulk change page's search and filters, as the form sends them."""

    q: str = ""
    status: str = ""
    step: str = ""
    extra: str = ""
    page: int = 1

    def params(self) -> dict[str, str]:
        return _params({"q": self.q, "status": self.status, "step": self.step, "extra": self.extra})

    @property
    def filtered(self) -> bool:
        return bool(self.params())

    def filter(self) -> svc.ChangeFilter:
        return svc.ChangeFilter(
            statuses=(self.status,) if self.status else (),
            search=self.q or None,
            step=self.step or None,
            additional_step=self.extra or None,
        )


def detail_query(
    q: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=30)] = "",
    step: Annotated[str, Query(max_length=30)] = "",
    extra: Annotated[str, Query(max_length=30)] = "",
    page: PageNumber = 1,
) -> DetailQuery:
    """The detail page's query parameters, checked (an unknown value is a 400 naming it)."""
    return DetailQuery(
        q=q.strip(),
        status=_choice(status, set(CHANGE_STATUSES), "status"),
        step=_choice(step, _STEPS, "step"),
        extra=_choice(extra, _EXTRA_STEPS, "additional step status"),
        page=page,
    )


ListParams = Annotated[ListQuery, Depends(list_query)]
DetailParams = Annotated[DetailQuery, Depends(detail_query)]
