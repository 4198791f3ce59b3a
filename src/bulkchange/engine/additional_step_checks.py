"""Submit-time checks of the additional steps: a row that cannot be billed or associated is refused up front.

* ``CustomerRatePlan`` must name a known plan or pool (``CustomerRatePlan`` table).
* Billing (``RevService`` / ``RevServiceProductCreateModel``): a numeric ``RevCustomerId``, a
  ``ServiceTypeId``, ``RevProductIdList`` and ``RateList`` of the same length (the original could fail
  on an index error mid-way), and an active Rev.io ``IntegrationAuthentication`` — when the row names
  none and the tenant has exactly one, that one is written into the change request.

Both lookups are the submitting tenant's only (the tenant of the bulk change's service provider): another
tenant's plan or credential is answered exactly as one that does not exist, and is never listed.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.domain.change_request import StatusUpdateRequest
from bulkchange.engine.additional_step import billing_model
from bulkchange.store.tables import CustomerRatePlan, IntegrationAuthentication

Problem = tuple[str, str]  # (field, message)


class AdditionalStepChecker:
    """Checks rows against the database, loading the tenant's (small) lookup tables once per submission."""

    def __init__(self, session: Session, tenant_id: int | None) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self._plans: set[str] | None = None
        self._auths: list[int] | None = None

    @property
    def plans(self) -> set[str]:
        """The names of the tenant's customer rate plans and pools."""
        if self._plans is None:
            self._plans = set(
                self.session.execute(
                    select(CustomerRatePlan.name).where(
                        CustomerRatePlan.tenant_id == self.tenant_id, CustomerRatePlan.is_deleted.is_(False)
                    )
                ).scalars()
            )
        return self._plans

    @property
    def auths(self) -> list[int]:
        """The ids of the tenant's active Rev.io credentials."""
        if self._auths is None:
            self._auths = list(
                self.session.execute(
                    select(IntegrationAuthentication.id)
                    .where(
                        IntegrationAuthentication.tenant_id == self.tenant_id,
                        IntegrationAuthentication.is_active.is_(True),
                        IntegrationAuthentication.is_deleted.is_(False),
                    )
                    .order_by(IntegrationAuthentication.id)
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
                            "none is configured for this tenant (`bulkchange billing add --tenant`)"
                            if not self.auths
                            else f"this tenant has {len(self.auths)}, name one in IntegrationAuthenticationId"
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
