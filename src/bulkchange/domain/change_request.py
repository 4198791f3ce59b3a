"""The change request stored on each ``M2M_DeviceChange.ChangeRequest`` (seed §9, original's JSON names).

The original deserialised this JSON case-insensitively (Newtonsoft); we accept the same names and write
them back in the original's casing, so rows written by either system read the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow", str_strip_whitespace=True)


class PrimaryPlaceOfUse(_Model):
    """``thingSpacePPU``: the customer name and address sent with an activation."""

    first_name: str | None = Field(default=None, alias="FirstName")
    last_name: str | None = Field(default=None, alias="LastName")
    address_line: str | None = Field(default=None, alias="AddressLine")
    city: str | None = Field(default=None, alias="City")
    state: str | None = Field(default=None, alias="State")
    zip_code: str | None = Field(default=None, alias="ZipCode")
    country: str | None = Field(default=None, alias="Country")

    def to_carrier(self) -> dict[str, Any] | None:
        """The activate body's ``primaryPlaceOfUse``, only when both names are present (as the original)."""
        if not (self.first_name and self.last_name):
            return None
        address = {
            "addressLine1": self.address_line,
            "city": self.city,
            "state": self.state,
            "zip": self.zip_code,
            "country": self.country,
        }
        return {
            "customerName": {"firstName": self.first_name, "lastName": self.last_name},
            "address": {k: v for k, v in address.items() if v},
        }


class DeviceStatusUpdateRequest(_Model):
    """The device part of a change (seed §9.2 plus the fields the original reads), for either carrier.

    ThingSpace reads RatePlanCode (its service plan), MdnZipCode, ReasonCode, EtfWaiver, SkuNumber,
    PublicIpRestriction and thingSpacePPU; Control Center reads RatePlan and CommunicationPlan (plan
    *names*, sent in the same edit as the status) and EffectiveDate (the change is scheduled for that
    date; naive values are UTC). A carrier refuses at submit the fields it cannot honour.
    """

    iccid: str = Field(alias="ICCID")
    imei: str | None = Field(default=None, alias="IMEI")
    rate_plan_code: str | None = Field(default=None, validation_alias=AliasChoices("RatePlanCode", "ServicePlan"))
    mdn_zip_code: str | None = Field(default=None, validation_alias=AliasChoices("MdnZipCode", "ZipCode"))
    reason_code: str | None = Field(default=None, alias="ReasonCode")
    etf_waiver: bool = Field(default=False, alias="EtfWaiver")
    sku_number: str | None = Field(default=None, alias="SkuNumber")
    public_ip_restriction: str | None = Field(default=None, alias="PublicIpRestriction")
    rev_account_number: str | None = Field(default=None, alias="RevAccountNumber")
    thing_space_ppu: PrimaryPlaceOfUse | None = Field(default=None, alias="thingSpacePPU")
    # Control Center (Jasper / AT&T POD 19).
    rate_plan: str | None = Field(default=None, alias="RatePlan")
    communication_plan: str | None = Field(default=None, alias="CommunicationPlan")
    effective_date: datetime | None = Field(default=None, alias="EffectiveDate")

    @field_validator("effective_date")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        """A date without a zone is UTC (the carrier is sent UTC)."""
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @property
    def zip_for_activation(self) -> str | None:
        """The MDN zip code, falling back to the PPU's zip; None when neither is given (submit refuses that)."""
        if self.mdn_zip_code:
            return self.mdn_zip_code
        return self.thing_space_ppu.zip_code if self.thing_space_ppu else None


ThingSpaceStatusUpdateRequest = DeviceStatusUpdateRequest
"""The original's name for the device part of a ThingSpace change (the same model)."""


class RevServiceRequest(_Model):
    """``RevService`` / ``RevServiceProductCreateModel``: what billing creates after success."""

    rev_customer_id: str | None = Field(default=None, alias="RevCustomerId")
    service_type_id: int | None = Field(default=None, alias="ServiceTypeId")
    provider_id: int | None = Field(default=None, alias="ProviderId")
    prorate: bool = Field(default=False, alias="Prorate")
    effective_date: str | None = Field(default=None, alias="EffectiveDate")
    activated_date: str | None = Field(default=None, alias="ActivatedDate")
    usage_plan_group_id: int | None = Field(default=None, alias="UsagePlanGroupId")
    rev_package_id: int | None = Field(default=None, alias="RevPackageId")
    rev_product_id: int | None = Field(default=None, alias="RevProductId")
    rate: Decimal | None = Field(default=None, alias="Rate")
    rev_product_id_list: list[int] | None = Field(default=None, alias="RevProductIdList")
    rate_list: list[Decimal] | None = Field(default=None, alias="RateList")
    description: str | None = Field(default=None, alias="Description")


class StatusUpdateRequest(_Model):
    """``StatusUpdateRequest<ThingSpaceStatusUpdateRequest>`` (seed §9.1), also for Control Center changes.

    ``IsFromAutomatedUpdateDeviceStatusLambda`` marks a change made by an automated status update (not an
    operator): Control Center's deactivation rate plan pre-step is skipped for it.
    """

    update_status: str = Field(alias="UpdateStatus")
    is_ignore_current_status: bool = Field(default=False, alias="IsIgnoreCurrentStatus")
    post_update_status_id: int | None = Field(default=None, alias="PostUpdateStatusId")
    account_number: str | None = Field(default=None, alias="AccountNumber")
    request: DeviceStatusUpdateRequest = Field(alias="Request")
    rev_service: RevServiceRequest | None = Field(default=None, alias="RevService")
    rev_service_product_create_model: RevServiceRequest | None = Field(
        default=None, alias="RevServiceProductCreateModel"
    )
    integration_authentication_id: int | None = Field(default=None, alias="IntegrationAuthenticationId")
    customer_rate_plan: str | None = Field(default=None, alias="CustomerRatePlan")
    # None (not written) unless the producer said so: rows of ThingSpace changes keep their JSON.
    is_from_automated_update_device_status_lambda: bool | None = Field(
        default=None, alias="IsFromAutomatedUpdateDeviceStatusLambda"
    )

    def to_json(self) -> str:
        """The stored JSON, in the original's property names, nulls omitted (as the original wrote it)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, text: str) -> StatusUpdateRequest:
        return cls.model_validate_json(text)
