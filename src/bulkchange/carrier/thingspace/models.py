"""Wire models of the ThingSpace M2M v1 API (requests, responses, callbacks) and client results.

The models follow the documented JSON shapes but are deliberately tolerant of what the real service
and its examples show: identifier kinds in any case (``iccid``, ``ICCID``, ``Iccid``), ``deviceIds``
sometimes an object instead of an array, ``faultcode`` vs ``faultCode``, ``name`` vs ``serviceName``,
optional ``expiresIn``, and unknown extra fields (ignored, never an error).  Field names are
snake_case in Python and camelCase on the wire (except the OAuth token response, which is snake_case).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "ActionAccepted",
    "ActionRequest",
    "ActivateRequest",
    "AddDeviceResult",
    "AddDevicesRequest",
    "AddResult",
    "CallbackListener",
    "CallbackMessage",
    "CallbackRegistration",
    "CarrierDevice",
    "CarrierInformation",
    "CustomField",
    "DeactivateRequest",
    "DeleteDeviceResult",
    "DeleteDevicesRequest",
    "DeviceEntry",
    "DeviceId",
    "DeviceListPage",
    "DeviceListRequest",
    "ExtendedAttribute",
    "FaultResponse",
    "LoginResponse",
    "RequestAccepted",
    "RequestStatusResponse",
    "ThingSpaceConnection",
    "TokenResponse",
]


class _Wire(BaseModel):
    """Base of every camelCase wire model: unknown fields ignored, both names accepted on input."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The JSON body to send: camelCase names, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _as_list(value: Any) -> Any:
    """Verizon's own examples sometimes give ``deviceIds`` as one object instead of an array."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return value


# --------------------------------------------------------------------------------------------- ids


class DeviceId(_Wire):
    """One device identifier.  ``kind`` is lowercased on input because the carrier mixes cases."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: str
    id: str

    @field_validator("kind", mode="before")
    @classmethod
    def _lower_kind(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        # A numeric id in JSON (seen in hand-written payloads) must keep its digits, not fail.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @classmethod
    def iccid(cls, value: str) -> DeviceId:
        return cls(kind="iccid", id=value)

    @classmethod
    def imei(cls, value: str) -> DeviceId:
        return cls(kind="imei", id=value)


DeviceIdList = Annotated[list[DeviceId], BeforeValidator(_as_list)]
"""A list of device ids that also accepts a single object or null."""


def _find(ids: list[DeviceId], kind: str) -> str | None:
    for d in ids:
        if d.kind == kind:
            return d.id
    return None


class DeviceEntry(_Wire):
    """One device in a request: all the identifiers the caller knows for it."""

    device_ids: list[DeviceId]


class CustomField(_Wire):
    key: str
    value: str | None = None


class ExtendedAttribute(_Wire):
    key: str
    value: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


# ----------------------------------------------------------------------------------------- auth


class TokenResponse(BaseModel):
    """OAuth2 client-credentials answer (snake_case on the wire).  ``expires_in`` is the *remaining*
    lifetime: the server hands back the same token for an hour."""

    model_config = ConfigDict(extra="ignore")

    access_token: str = Field(min_length=1)
    token_type: str | None = None
    expires_in: float | None = None
    scope: str | None = None


class LoginResponse(_Wire):
    """Session login answer; ``expiresIn`` (idle timeout, seconds) is optional in practice."""

    session_token: str = Field(min_length=1)
    expires_in: float | None = None


# ------------------------------------------------------------------------------------- requests


class AddDevicesRequest(_Wire):
    account_name: str | None = None
    state: str = "preactive"
    devices_to_add: list[DeviceEntry]
    sku_number: str | None = None
    group_name: str | None = None
    custom_fields: list[CustomField] | None = None


class ActivateRequest(_Wire):
    account_name: str | None = None
    devices: list[DeviceEntry]
    service_plan: str
    mdn_zip_code: str
    sku_number: str | None = None
    public_ip_restriction: str | None = None
    primary_place_of_use: dict[str, Any] | None = None
    carrier_ip_pool_name: str | None = None
    group_name: str | None = None
    custom_fields: list[CustomField] | None = None


class DeactivateRequest(_Wire):
    account_name: str
    devices: list[DeviceEntry]
    reason_code: str = "FF"
    etf_waiver: bool = False
    delete_after_deactivation: bool | None = None


class ActionRequest(_Wire):
    """Body of suspend and restore (``withBilling`` only means something for suspend)."""

    account_name: str | None = None
    devices: list[DeviceEntry]
    with_billing: bool | None = None


class DeleteDevicesRequest(_Wire):
    devices_to_delete: list[DeviceEntry]


class DeviceListRequest(_Wire):
    device_id: DeviceId | None = None
    account_name: str | None = None
    current_state: str | None = None
    largest_device_id_seen: int | None = None
    max_number_of_devices: int | None = None


class CallbackRegistration(_Wire):
    """Register body: the service is called ``name`` here, but ``serviceName`` in every answer."""

    name: str
    url: str
    username: str | None = None
    password: SecretStr | None = None

    def wire(self) -> dict[str, Any]:
        body = super().wire()
        if self.password is not None:
            body["password"] = self.password.get_secret_value()
        return body


# ------------------------------------------------------------------------------------ responses


class AddDeviceResult(_Wire):
    """One per-device line of the synchronous add answer, kept as the carrier sent it."""

    device_ids: DeviceIdList = Field(default_factory=list)
    response: str = ""

    @property
    def already_exists(self) -> bool:
        return self.response.strip().rstrip(".").lower() == "error. device already exists"

    @property
    def ok(self) -> bool:
        """Added, or already in the inventory (the product treats both as success)."""
        return self.response.strip().lower() == "success" or self.already_exists

    @property
    def iccid(self) -> str | None:
        return _find(self.device_ids, "iccid")


class RequestAccepted(_Wire):
    """``{"requestId": ...}`` answer of the asynchronous provisioning calls."""

    request_id: str | None = None


class DeleteDeviceResult(_Wire):
    device_ids: DeviceIdList = Field(default_factory=list)
    status: str = ""
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status.strip().lower() == "success"


class CarrierInformation(_Wire):
    carrier_name: str | None = None
    service_plan: str | None = None
    state: str | None = None


class CarrierDevice(_Wire):
    """One device of a list answer.  ``state`` is lowercased (``active``, ``pending activation``...)."""

    account_name: str | None = None
    device_ids: DeviceIdList = Field(default_factory=list)
    carrier_informations: list[CarrierInformation] = Field(default_factory=list)
    ip_address: str | None = None
    extended_attributes: list[ExtendedAttribute] = Field(default_factory=list)
    custom_fields: list[CustomField] = Field(default_factory=list)
    group_names: list[str] = Field(default_factory=list)
    connected: bool | None = None
    created_at: str | None = None
    last_activation_date: str | None = None
    billing_cycle_end_date: str | None = None

    @field_validator("carrier_informations", "extended_attributes", "custom_fields", "group_names", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    def id_of(self, kind: str) -> str | None:
        return _find(self.device_ids, kind.lower())

    @property
    def iccid(self) -> str | None:
        return self.id_of("iccid")

    @property
    def imei(self) -> str | None:
        return self.id_of("imei")

    @property
    def msisdn(self) -> str | None:
        return self.id_of("msisdn")

    @property
    def mdn(self) -> str | None:
        return self.id_of("mdn")

    @property
    def state(self) -> str | None:
        for info in self.carrier_informations:
            if info.state:
                return info.state.strip().lower()
        return None

    @property
    def service_plan(self) -> str | None:
        for info in self.carrier_informations:
            if info.service_plan:
                return info.service_plan
        return None

    def attribute(self, key: str) -> str | None:
        """Extended attribute by key (case-insensitive)."""
        wanted = key.lower()
        for attr in self.extended_attributes:
            if attr.key.lower() == wanted:
                return attr.value
        return None

    @property
    def internal_id(self) -> int | None:
        """The carrier's internal device id (extended attribute ``DeviceId``), the list paging cursor."""
        value = self.attribute("DeviceId")
        if value is None:
            return None
        value = value.strip()
        return int(value) if value.isdigit() else None


class DeviceListPage(_Wire):
    """One page of ``/devices/actions/list`` (HTTP 202 means more pages follow, 200 the last one)."""

    has_more_data: bool = False
    devices: list[CarrierDevice] = Field(default_factory=list)

    @field_validator("devices", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class RequestStatusResponse(_Wire):
    request_id: str | None = None
    status: str


class CallbackListener(_Wire):
    """A registered callback listener.  Answers say ``serviceName``; the register body says ``name``."""

    account_name: str | None = None
    service_name: str = Field(validation_alias=AliasChoices("serviceName", "service_name", "name"))
    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None


# ------------------------------------------------------------------------------------ callbacks


class FaultResponse(BaseModel):
    """``faultResponse`` of a failed callback; the key case varies between documents."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    faultcode: str | None = Field(
        default=None, validation_alias=AliasChoices("faultcode", "faultCode", "FaultCode", "fault_code")
    )
    faultstring: str | None = Field(
        default=None,
        validation_alias=AliasChoices("faultstring", "faultString", "FaultString", "fault_string"),
    )


class CallbackMessage(_Wire):
    """A CarrierService callback (one per device) as POSTed by ThingSpace to our listener.

    ``succeeded`` is true only for ``status == "Success"`` without a fault.  For an activation the new
    numbers and the IP address come from ``deviceResponse.activateResponse``; ``operation`` is the
    ``<op>Response`` key without ``Response`` (``activate``, ``deactivate``, ``suspend``, ``restore``,
    ``changeIdentifier``...).  A failed callback has no ``deviceResponse``, so its operation is None and
    the caller relates it to its request through ``request_id``.
    """

    request_id: str | None = None
    device_ids: DeviceIdList = Field(default_factory=list)
    status: str | None = None
    callback_count: int | None = None
    max_callback_threshold: int | None = None
    device_response: dict[str, Any] | None = None
    fault_response: FaultResponse | None = None
    username: str | None = None
    password: SecretStr | None = None

    @classmethod
    def parse(cls, body: bytes | str | dict[str, Any]) -> CallbackMessage:
        """Parse a callback body (raw JSON text or an already decoded dict)."""
        if isinstance(body, dict):
            return cls.model_validate(body)
        return cls.model_validate_json(body)

    def _op_item(self) -> tuple[str, dict[str, Any]] | None:
        for key, value in (self.device_response or {}).items():
            if key.lower().endswith("response") and isinstance(value, dict):
                return key, value
        return None

    @property
    def operation(self) -> str | None:
        item = self._op_item()
        if item is None:
            return None
        name = item[0][: -len("response")]
        known = {"activate", "deactivate", "suspend", "restore"}
        return name.lower() if name.lower() in known else name

    def _response_ids(self) -> list[DeviceId]:
        item = self._op_item()
        if item is None:
            return []
        raw = _as_list(item[1].get("deviceIds"))
        ids: list[DeviceId] = []
        for entry in raw if isinstance(raw, list) else []:
            if isinstance(entry, dict) and "kind" in entry and "id" in entry:
                ids.append(DeviceId.model_validate(entry))
        return ids

    @property
    def fault_code(self) -> str | None:
        return self.fault_response.faultcode if self.fault_response else None

    @property
    def fault_string(self) -> str | None:
        return self.fault_response.faultstring if self.fault_response else None

    @property
    def succeeded(self) -> bool:
        return (self.status or "").strip().lower() == "success" and not self.fault_code

    @property
    def iccid(self) -> str | None:
        return _find(self.device_ids, "iccid") or _find(self._response_ids(), "iccid")

    @property
    def imei(self) -> str | None:
        return _find(self.device_ids, "imei") or _find(self._response_ids(), "imei")

    @property
    def msisdn(self) -> str | None:
        return _find(self._response_ids(), "msisdn")

    @property
    def mdn(self) -> str | None:
        return _find(self._response_ids(), "mdn")

    def _response_field(self, key: str) -> str | None:
        item = self._op_item()
        if item is None:
            return None
        value = item[1].get(key)
        return str(value) if value is not None else None

    @property
    def ip_address(self) -> str | None:
        return self._response_field("ipAddress")

    @property
    def state(self) -> str | None:
        value = self._response_field("state")
        return value.strip().lower() if value else None


# ------------------------------------------------------------------------------- configuration


class ThingSpaceConnection(BaseModel):
    """Where and as whom to talk to ThingSpace.  Token and login URLs are separately configurable
    (as in the original system) so the client can point at a simulator or a proxy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    token_url: str = ""
    login_url: str = ""
    client_id: str
    client_secret: SecretStr
    username: str
    password: SecretStr
    account_name: str

    @model_validator(mode="after")
    def _defaults(self) -> ThingSpaceConnection:
        base = self.base_url.rstrip("/")
        object.__setattr__(self, "base_url", base)
        if not self.token_url:
            object.__setattr__(self, "token_url", f"{base}/api/ts/v1/oauth2/token")
        if not self.login_url:
            object.__setattr__(self, "login_url", f"{base}/api/m2m/v1/session/login")
        return self

    @property
    def m2m_url(self) -> str:
        return f"{self.base_url}/api/m2m/v1"


# -------------------------------------------------------------------------------------- results


class AddResult(BaseModel):
    """Answer of add: the per-device lines as-is, plus what the engine logs."""

    model_config = ConfigDict(frozen=True)

    devices: list[AddDeviceResult]
    request_text: str
    response_text: str
    http_status: int


class ActionAccepted(BaseModel):
    """An accepted asynchronous request (activate/deactivate/suspend/restore), plus what the engine logs."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    request_text: str
    response_text: str
    http_status: int
