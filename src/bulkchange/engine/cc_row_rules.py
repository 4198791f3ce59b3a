"""What a row of a Control Center (Cisco IoT Control Center, AT&T POD 19) bulk change is.

A Control Center edit is one SIM per call: the ICCID is all a status change needs. A row may also carry
``RatePlan`` and ``CommunicationPlan`` (plan *names*, sent in the same edit as the status) and
``EffectiveDate`` (ISO 8601, no zone = UTC: the carrier makes the change on that date; at most 180 days
ahead, checked by the adapter when the row is planned). The Rev.io service created after a success takes
the same columns as on ThingSpace, except that its effective date is ``RevEffectiveDate`` here, since
``EffectiveDate`` is the carrier's.
"""

from __future__ import annotations

from bulkchange.domain.carriers import CarrierName
from bulkchange.domain.statuses import TargetStatus
from bulkchange.engine.rowrules_model import RowRules
from bulkchange.input import Column, Columns, Needs

CARRIER = CarrierName.CONTROLCENTER.value

_REQUEST_FIELDS = {
    "ICCID": "ICCID",
    "IMEI": "IMEI",
    "RatePlan": "RatePlan",
    "CommunicationPlan": "CommunicationPlan",
    "EffectiveDate": "EffectiveDate",
}
# Column → ``RevService`` field (the Rev.io service created after a success, as on ThingSpace).
_REV_FIELDS = {
    "RevCustomerId": "RevCustomerId",
    "ServiceTypeId": "ServiceTypeId",
    "ProviderId": "ProviderId",
    "Prorate": "Prorate",
    "RevEffectiveDate": "EffectiveDate",
    "ActivatedDate": "ActivatedDate",
    "UsagePlanGroupId": "UsagePlanGroupId",
    "RevPackageId": "RevPackageId",
    "RevProductId": "RevProductId",
    "Rate": "Rate",
    "Description": "Description",
    "RevProductIdList": "RevProductIdList",
    "RateList": "RateList",
}
_TOP_FIELDS = {
    "CustomerRatePlan": "CustomerRatePlan",
    "Status": "UpdateStatus",
    "IntegrationAuthenticationId": "IntegrationAuthenticationId",
    "IsFromAutomatedUpdateDeviceStatusLambda": "IsFromAutomatedUpdateDeviceStatusLambda",
}

COLUMNS = Columns(
    [
        Column("ICCID", example="89011704258018735310"),
        Column("IMEI", example="990013907835578"),
        Column("Status", aliases=("UpdateStatus",), example="deactive"),
        Column("RatePlan", aliases=("RatePlanName",), example="POD19 1GB"),
        Column("CommunicationPlan", aliases=("CommPlan", "CommunicationPlanName"), example="POD19 Data"),
        Column("EffectiveDate", aliases=("ScheduledDate",), example="2030-01-31T00:00:00Z"),
        Column("IsIgnoreCurrentStatus", example="false"),
        Column("IsFromAutomatedUpdateDeviceStatusLambda", example="false"),
        Column("CustomerRatePlan"),
        Column("IntegrationAuthenticationId"),
        *(Column(name) for name in _REV_FIELDS),
    ]
)

_ICCID_ONLY = ("ICCID",)
_WHAT = {
    TargetStatus.INVENTORY: "moves to inventory",
    TargetStatus.PENDING_ACTIVATION: "pending activations",
    TargetStatus.ACTIVE: "activations",
    TargetStatus.DEACTIVE: "deactivations",
    TargetStatus.SUSPEND: "suspensions",
    TargetStatus.RESTORE: "restores",
    TargetStatus.RETIRED: "retirements",
}

#: Every target status needs only the ICCID on Control Center (suspend and restore are refused when the
#: row is planned: Control Center has neither).
NEEDS: dict[tuple[TargetStatus, bool], Needs] = {
    (target, ignore): Needs(what, _ICCID_ONLY) for target, what in _WHAT.items() for ignore in (False, True)
}

CONTROLCENTER = RowRules(
    carrier=CARRIER,
    columns=COLUMNS,
    needs=NEEDS,
    request_fields=_REQUEST_FIELDS,
    top_fields=_TOP_FIELDS,
    rev_fields=_REV_FIELDS,
    rev_list_fields=frozenset({"RevProductIdList", "RateList"}),
    template_extra=("RatePlan", "CommunicationPlan", "EffectiveDate"),
    field_columns={"UpdateStatus": "Status"} | {field: column for column, field in _REQUEST_FIELDS.items()},
)
