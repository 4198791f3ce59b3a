"""``GET /api/v1/service-providers``: the service providers an API key may create bulk changes for."""

from __future__ import annotations

from bulkchange.api.rest.access import Rt
from bulkchange.api.rest.params import api_router
from bulkchange.api.schemas import ServiceProviderOut
from bulkchange.api.security import CurrentPrincipal
from bulkchange.services import bulk_changes

router = api_router()


@router.get("/service-providers", response_model=list[ServiceProviderOut], tags=["service providers"])
def service_providers(principal: CurrentPrincipal, rt: Rt) -> list[ServiceProviderOut]:
    """Service providers this API key may create bulk changes for."""
    with rt.reading() as session:
        found = bulk_changes.providers_in(session, principal.service_provider_ids)
    return [ServiceProviderOut(id=p.id, name=p.name, callbacks=p.callbacks) for p in found]
