"""Settings of the HTTP surface (environment, ``BULKCHANGE_`` prefix), kept apart from the engine's.

* ``BULKCHANGE_CALLBACK_USERNAME`` / ``BULKCHANGE_CALLBACK_PASSWORD`` — what ThingSpace must echo in each
  callback (the values given when registering the listener); unset = not checked.
* ``BULKCHANGE_CALLBACK_ALLOWED_SOURCES`` — comma-separated addresses or networks callbacks may come from
  (e.g. ThingSpace's published IPs); empty = any.
* ``BULKCHANGE_MAX_BODY_BYTES`` — the largest request body (default 48 MiB: a 25 MiB upload, base64 in the
  dashboard's confirmation form); ``BULKCHANGE_CALLBACK_MAX_BODY_BYTES`` — of one callback (64 KiB).
* ``BULKCHANGE_METRICS_TOKEN`` — a bearer token that may read ``/metrics`` (besides any API key); it is
  checked without the database, so the scrape still works (``bulkchange_database_up 0``) when it is down.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKCHANGE_", extra="ignore")

    callback_username: SecretStr | None = None
    callback_password: SecretStr | None = None
    callback_allowed_sources: str = ""
    metrics_token: SecretStr | None = None
    max_body_bytes: int = Field(default=48 * 1024 * 1024, ge=1024)
    callback_max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    @property
    def callback_networks(self) -> list[IpNetwork]:
        """The allow-list as networks (a bare address is a /32 or /128). Raises ValueError on a bad entry."""
        parts = [p.strip() for p in self.callback_allowed_sources.split(",")]
        return [ipaddress.ip_network(p, strict=False) for p in parts if p]

    @property
    def callback_credentials(self) -> tuple[str, str] | None:
        if self.callback_username is None and self.callback_password is None:
            return None
        user = self.callback_username.get_secret_value() if self.callback_username else ""
        password = self.callback_password.get_secret_value() if self.callback_password else ""
        return user, password
