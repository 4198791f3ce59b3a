"""Submit-time checks of the additional steps: a row that cannot be billed or associated is refused up front.

* ``CustomerRatePlan`` must name a known plan or pool (``CustomerRatePlan`` table).
* Billing (``RevService`` / ``RevServiceProductCreateModel``): a numeric ``RevCustomerId``, a
  ``ServiceTypeId``, ``RevProductIdList`` and ``RateList`` of the same length (the original could fail
  on an index error mid-way), and an active Rev.io ``IntegrationAuthentication`` — when the row names
  none and exactly one is configured, that one is written into the change request.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.integrations.steps import billing_model
from bulkchange.store.tables import CustomerRatePlan, IntegrationAuthentication

Problem = tuple[str, str]  # (field, message)


class AdditionalStepChecker:
    """Checks rows against the database, loading the (small) lookup tables once per submission."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._plans: set[str] | None = None
        self._auths: list[int] | None = None

    @property
    def plans(self) -> set[str]:
        if self._plans is None:
            self._plans = set(
                self.session.execute(
                    select(CustomerRatePlan.name).where(CustomerRatePlan.is_deleted.is_(False))
                ).scalars()
            )
        return self._plans

    @property
    def auths(self) -> list[int]:
        if self._auths is None:
            self._auths = list(
                self.session.execute(
                    select(IntegrationAuthentication.id).where(
                        IntegrationAuthentication.is_active.is_(True), IntegrationAuthentication.is_deleted.is_(False)
                    )
                ).scalars()
            )
        return self._auths

    def check(self, req: StatusUpdateRequest) -> tuple[StatusUpdateRequest, list[Problem]]:
        """The request (with a defaulted IntegrationAuthenticationId) and the problems found."""
        problems: list[Problem] = []
        plan = req.customer_rate_plan
        if plan and plan not in self.plans:
            known = ", ".join(sorted(self.plans)[:10]) or "none configured"
            problems.append(("CustomerRatePlan", f"unknown customer rate plan {plan!r} (known: {known})"))
        model = billing_model(req)
        if model is None:
            return req, problems
        if not str(model.rev_customer_id or "").strip().isdigit():
            problems.append(("RevCustomerId", "billing needs a numeric RevCustomerId"))
        if model.service_type_id is None:
            problems.append(("ServiceTypeId", "billing needs a ServiceTypeId"))
        for part in (req.rev_service, req.rev_service_product_create_model):
            if part is not None and part.rev_product_id_list:
                rates = part.rate_list or []
                if len(rates) != len(part.rev_product_id_list):
                    problems.append(
                        (
                            "RateList",
                            f"{len(rates)} rate(s) for {len(part.rev_product_id_list)} product(s) in RevProductIdList",
                        )
                    )
        auth_id = req.integration_authentication_id
        if auth_id is None:
            if len(self.auths) == 1:
                req = req.model_copy(update={"integration_authentication_id": self.auths[0]})
            else:
                problems.append(
                    (
                        "IntegrationAuthenticationId",
                        "billing needs a Rev.io integration authentication: "
                        + (
                            "none is configured (`bulkchange billing add`)"
                            if not self.auths
                            else f"{len(self.auths)} are configured, name one"
                        ),
                    )
                )
        elif auth_id not in self.auths:
            problems.append(("IntegrationAuthenticationId", f"no active Rev.io integration authentication {auth_id}"))
        return req, problems


def split_list(value: object) -> object:
    """A CSV cell holding a list (``101;102`` or ``101|102`` or ``101,102``) as a list; others unchanged."""
    if isinstance(value, str):
        for sep in (";", "|", ","):
            if sep in value:
                return [v.strip() for v in value.split(sep) if v.strip()]
        return [value.strip()] if value.strip() else []
    return value
