"""The runtime and the access checks every REST route shares.

``Rt`` is the dependency that hands a route the process's ``Runtime`` (``app.state.runtime``, set by
``create_app``). The checks answer as the API always has: a provider the API key may not use is 403, a bulk
change of another tenant is 404 (its existence is not disclosed).
"""

from __future__ import annotations

from fastapi import HTTPException

from bulkchange.api import queries
from bulkchange.api.deps import RuntimeDep
from bulkchange.api.schemas import BulkChangeOut
from bulkchange.api.security import CurrentPrincipal
from bulkchange.engine.submit import input_carrier
from bulkchange.runtime import Runtime
from bulkchange.services.apikeys import owned_bulk

Rt = RuntimeDep


def who(principal: CurrentPrincipal) -> str:
    """Who acted, for the audit rows: the API key's id (never the key)."""
    return f"api-key {principal.key_id}"


def check_provider(principal: CurrentPrincipal, service_provider_id: int) -> None:
    """403 unless the API key may use the service provider."""
    if not principal.may_use(service_provider_id):
        raise HTTPException(
            status_code=403, detail=f"service provider {service_provider_id} is not one this API key may use"
        )


def require_bulk(rt: Runtime, principal: CurrentPrincipal, bulk_change_id: int) -> None:
    """404 unless the bulk change exists and belongs to one of the API key's service providers."""
    with rt.reading() as session:
        if owned_bulk(session, principal, bulk_change_id) is None:
            raise HTTPException(status_code=404, detail=f"no bulk change {bulk_change_id}")


def carrier_of(rt: Runtime, service_provider_id: int) -> str:
    """The carrier whose columns the provider's rows are read with."""
    with rt.reading() as session:
        return input_carrier(session, service_provider_id)


def current(rt: Runtime, bulk_change_id: int) -> BulkChangeOut:
    """The bulk change as it stands now (after an action on it; it is known to exist)."""
    with rt.reading() as session:
        out = queries.get_bulk_change(session, bulk_change_id)
    assert out is not None
    return out
