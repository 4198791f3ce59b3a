"""The deactivation pre-step's choice: the cheapest carrier rate plan that covers the cycle's usage.

Before a line is deactivated, the original moved it to the cheapest rate plan whose data allowance covers
what the line used this billing cycle, so the last (partial) cycle is billed on the smallest plan that
does not run into overage. The catalogue is the service provider's ``JasperCarrierRatePlan`` rows (plan
name, allowance in MB, base rate), handed to the adapter in the account's ``rate_plans`` field.

Unlike the original, a provider with no rate plans known does not block the deactivation forever: the
pre-step warns in its log row and the deactivation goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class RatePlanOption:
    """One carrier rate plan: its name at Control Center, its data allowance and its base rate."""

    code: str
    plan_mb: float
    base_rate: Decimal

    def as_field(self) -> dict[str, str]:
        """The account field form (JSON-friendly: the rate as text, so no precision is lost)."""
        return {"code": self.code, "plan_mb": repr(self.plan_mb), "base_rate": str(self.base_rate)}

    @classmethod
    def from_field(cls, value: Mapping[str, Any]) -> RatePlanOption:
        return cls(str(value["code"]), float(value["plan_mb"]), Decimal(str(value["base_rate"])))


def rate_plans_of(field: Iterable[Mapping[str, Any]] | None) -> list[RatePlanOption]:
    """The catalogue from an account's ``rate_plans`` field (missing: none known)."""
    return [RatePlanOption.from_field(value) for value in field or ()]


def choose_rate_plan(plans: Sequence[RatePlanOption], usage_mb: float) -> RatePlanOption | None:
    """The cheapest plan whose allowance covers ``usage_mb``; when none does, the plan with the largest
    allowance (the most expensive among those, as the original took the last plan by rate); None when no
    plans are known. Ties on rate go to the larger allowance, then the name, so the choice is stable."""
    if not plans:
        return None
    covering = [p for p in plans if p.plan_mb >= usage_mb]
    if covering:
        return min(covering, key=lambda p: (p.base_rate, -p.plan_mb, p.code))
    return max(plans, key=lambda p: (p.plan_mb, p.base_rate, p.code))
