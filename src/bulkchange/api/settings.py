"""Settings of the HTTP surface (environment, ``BULKCHANGE_`` prefix), kept apart from the engine's.

* ``BULKCHANGE_MAX_BODY_BYTES`` — the largest request body (default 48 MiB: a 25 MiB upload, base64 in the
  dashboard's confirmation form). The callback receiver's own limits (``BULKCHANGE_CALLBACK_*``) are engine
  settings (``bulkchange.settings``): the Lambda callback handler enforces them too.
* ``BULKCHANGE_METRICS_TOKEN`` — a bearer token that may read ``/metrics`` (besides any API key); it is
  checked without the database, so the scrape still works (``bulkchange_database_up 0``) when it is down.

Callback credentials are not settings: they are per service provider, in the database
(``bulkchange providers callback N``).
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKCHANGE_", extra="ignore")

    metrics_token: SecretStr | None = None
    max_body_bytes: int = Field(default=48 * 1024 * 1024, ge=1024)
