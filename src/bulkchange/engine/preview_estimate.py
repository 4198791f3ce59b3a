"""How long a previewed bulk change will take at a Control Center account's calls per second.

A Control Center account allows a few calls per second (1 by default, the contract's figure otherwise) and
every change costs several calls: the edit, the read that verifies it and, for POD 19, the audit trail read;
a deactivation with the rate plan pre-step enabled costs the usage read and a verified plan edit more. That
budget, not the workers, sets the time, so the preview says it before anyone confirms. ThingSpace has no such
per-call figure (its changes go in batches): no estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bulkchange.domain.carriers import CarrierName
from bulkchange.store.tables import JasperAuthentication, ServiceProvider


def calls_per_change(*, pod19: bool, pre_step: bool) -> int:
    """Carrier calls of one change's status step (edit, read, POD 19 audit) and of its pre-step, if any."""
    verified_edit = 2 + (1 if pod19 else 0)
    return verified_edit + (1 + verified_edit if pre_step else 0)


def duration_text(seconds: float) -> str:
    """``2 h 47 min``, ``12 min``, ``40 s``."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    hours, minutes = divmod(round(total / 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def estimate(session: Session, provider: ServiceProvider | None, plans: Sequence[Sequence[str]]) -> str | None:
    """``"10,000 changes × 3 calls ≈ 8 h 20 min at 1 TPS"`` for a Control Center provider's valid rows'
    ``plans`` (their steps); None for another carrier or nothing to send."""
    if provider is None or provider.integration_id != CarrierName.CONTROLCENTER.integration_id or not plans:
        return None
    auth = session.scalars(
        select(JasperAuthentication).where(JasperAuthentication.service_provider_id == provider.id)
    ).first()
    if auth is None:
        return None
    tps = max(0.1, float(auth.tps or 1.0))
    calls = sum(calls_per_change(pod19=bool(auth.pod19), pre_step=_pre_step(auth, plan)) for plan in plans)
    per_change = calls / len(plans)
    each = f"{per_change:g}" if per_change == int(per_change) else f"{per_change:.1f}"
    return f"{len(plans):,} changes × {each} calls ≈ {duration_text(calls / tps)} at {tps:g} TPS"


def _pre_step(auth: JasperAuthentication, plan: Sequence[str]) -> bool:
    return bool(auth.rate_plan_pre_step) and len(plan) > 1  # [RATE_PLAN, STATUS]: the pre-step is planned
