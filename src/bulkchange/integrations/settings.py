"""Settings of the additional steps (billing, rate plans) and of the status-update webhook.

Read from the environment with the same ``BULKCHANGE_`` prefix as the engine's settings:
``BULKCHANGE_WEBHOOK_URL``, ``BULKCHANGE_WEBHOOK_SECRET``, ``BULKCHANGE_BILLING_MAX_ATTEMPTS`` …
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bulkchange.security.redaction import register_secret
from bulkchange.security.transport import require_https


class IntegrationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKCHANGE_", extra="ignore", populate_by_name=True)

    # Billing (Rev.io) and the customer rate plan: the change's additional step.
    billing_max_attempts: int = Field(default=8, ge=1)
    billing_retry_base_s: float = Field(default=5.0, ge=0)
    billing_retry_cap_s: float = Field(default=600.0, ge=0)
    billing_timeout_s: float = Field(default=15.0, gt=0)
    billing_lease_s: int = Field(default=300, ge=1)
    billing_batch: int = Field(default=50, ge=1)  # changes claimed at once by one worker
    billing_concurrency: int = Field(default=8, ge=1)  # Rev.io calls in flight per worker

    # The status-update webhook (NotifyStatusUpdateDone): unset URL = no webhook.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_page_size: int = Field(default=1000, ge=1)  # devices per document
    webhook_text_limit: int = Field(default=1000, ge=0)  # characters kept of each log text
    webhook_timeout_s: float = Field(default=30.0, gt=0)
    webhook_max_attempts: int = Field(default=20, ge=1)
    webhook_retry_base_s: float = Field(default=5.0, ge=0)
    webhook_retry_cap_s: float = Field(default=3600.0, ge=0)
    webhook_lease_s: int = Field(default=300, ge=1)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_is_https(cls, value: str | None) -> str | None:
        """The webhook carries device data: https, except on loopback."""
        if not value:
            return None
        return require_https(value, "BULKCHANGE_WEBHOOK_URL")

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_is_masked(cls, value: str | None) -> str | None:
        register_secret(value)  # never in a log line
        return value
