"""Credentials by reference: SSM Parameter Store and Secrets Manager, read through boto3, cached with a TTL.

A ThingSpaceAuthentication field (``ClientId``, ``ClientSecret``, ``Username``, ``Password``) or the
database URL may hold a *reference* instead of the value itself:

* ``ssm:/bulkchange/prod/thingspace/password`` — an SSM parameter (a ``SecureString`` is decrypted);
* ``secretsmanager:<name or ARN>`` — a secret's ``SecretString``;
* ``secretsmanager:<name or ARN>#<key>`` — one key of a secret whose ``SecretString`` is a JSON object.

Anything else is a plain value and is returned unchanged, so existing rows keep working. Values are kept
for ``ttl_s`` seconds per reference (a rotated secret is picked up within one TTL) and never logged.

A reference that names nothing (parameter or secret not found, key missing) raises
``CredentialReferenceError``, a ``BulkFailure``: the bulk change goes ERROR with the reason and is
resumable once the parameter exists. Other AWS errors (throttling, network) propagate as they are, so the
message is redelivered.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bulkchange.domain.errors import BulkFailure

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_ssm.client import SSMClient

SSM_PREFIX = "ssm:"
SECRETS_MANAGER_PREFIX = "secretsmanager:"

_NOT_FOUND_CODES = frozenset({"ParameterNotFound", "ParameterVersionNotFound", "ResourceNotFoundException"})


class CredentialReferenceError(BulkFailure):
    """A credential reference that names no value (a configuration problem, not a transient one)."""


def is_reference(value: str | None) -> bool:
    return bool(value) and (str(value).startswith(SSM_PREFIX) or str(value).startswith(SECRETS_MANAGER_PREFIX))


class CredentialResolver:
    """Resolves ``ssm:`` / ``secretsmanager:`` references (see the module docstring); thread-safe.

    The boto3 clients are created on first use, so a deployment with only plain values never needs AWS.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        region: str | None = None,
        endpoint_url: str | None = None,
        ssm: SSMClient | None = None,
        secretsmanager: SecretsManagerClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s}")
        self._ttl_s = ttl_s
        self._region = region
        self._endpoint_url = endpoint_url
        self._ssm = ssm
        self._secretsmanager = secretsmanager
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self.fetches = 0
        """How many times a value was read from AWS (the cache's misses); for tests and metrics."""

    def __call__(self, value: str) -> str:
        return self.resolve(value)

    def resolve(self, value: str) -> str:
        """The value a reference names (from cache within the TTL); a plain value unchanged."""
        if not is_reference(value):
            return value
        now = self._clock()
        with self._lock:
            cached = self._cache.get(value)
            if cached is not None and cached[0] > now:
                return cached[1]
        resolved = self._fetch(value)
        with self._lock:
            self._cache[value] = (now + self._ttl_s, resolved)
            self.fetches += 1
        return resolved

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------------------------------------------------

    def _fetch(self, reference: str) -> str:
        from botocore.exceptions import ClientError

        try:
            if reference.startswith(SSM_PREFIX):
                return self._from_ssm(reference[len(SSM_PREFIX) :])
            return self._from_secrets_manager(reference[len(SECRETS_MANAGER_PREFIX) :])
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise CredentialReferenceError(f"credential reference {reference!r} names nothing ({code})") from None
            raise

    def _from_ssm(self, name: str) -> str:
        if not name:
            raise CredentialReferenceError("empty SSM parameter name in credential reference")
        response = self._ssm_client().get_parameter(Name=name, WithDecryption=True)
        return str(response["Parameter"].get("Value", ""))

    def _from_secrets_manager(self, ref: str) -> str:
        secret_id, _, key = ref.partition("#")
        if not secret_id:
            raise CredentialReferenceError("empty secret id in credential reference")
        response = self._secrets_client().get_secret_value(SecretId=secret_id)
        text = response.get("SecretString")
        if text is None:
            raise CredentialReferenceError(f"secret {secret_id!r} has no SecretString (binary secrets are not read)")
        if not key:
            return text
        try:
            document: Any = json.loads(text)
        except ValueError:
            raise CredentialReferenceError(f"secret {secret_id!r} is not a JSON object; cannot read #{key}") from None
        if not isinstance(document, dict) or key not in document:
            raise CredentialReferenceError(f"secret {secret_id!r} has no key {key!r}")
        return str(document[key])

    def _ssm_client(self) -> SSMClient:
        if self._ssm is None:
            import boto3

            self._ssm = boto3.client("ssm", region_name=self._region, endpoint_url=self._endpoint_url)
        return self._ssm

    def _secrets_client(self) -> SecretsManagerClient:
        if self._secretsmanager is None:
            import boto3

            self._secretsmanager = boto3.client(
                "secretsmanager", region_name=self._region, endpoint_url=self._endpoint_url
            )
        return self._secretsmanager
