"""Settings from the environment (pydantic-settings). The seed's variable names are kept as they are.

The only global state bulkchange has: everything else is passed in.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def user_data_dir() -> Path:
    """bulkchange's folder in the user's data directory (``~/.local/share/bulkchange`` on Linux): one place
    per user, whatever folder a command runs in."""
    return Path(platformdirs.user_data_dir("bulkchange", appauthor=False))


def default_database_url() -> str:
    return f"sqlite:///{user_data_dir() / 'bulkchange.sqlite3'}"


class Settings(BaseSettings):
    """All knobs, with defaults that run on one laptop."""

    model_config = SettingsConfigDict(env_prefix="BULKCHANGE_", extra="ignore", populate_by_name=True)

    # Default: a SQLite file in the user's data directory, never one relative to the working directory.
    database_url: str = Field(default_factory=default_database_url)

    # The seed's variables (unprefixed names).
    update_device_status_retry_number: int = Field(
        default=3,
        ge=1,
        validation_alias=AliasChoices(
            "THINGSPACE_UPDATE_DEVICE_STATUS_RETRY_NUMBER", "BULKCHANGE_UPDATE_DEVICE_STATUS_RETRY_NUMBER"
        ),
    )
    activation_check_delay_s: int = Field(
        default=900,
        ge=0,
        le=900,
        validation_alias=AliasChoices(
            "THINGSPACE_ACTIVATION_CHECK_DELAY_SECONDS", "BULKCHANGE_ACTIVATION_CHECK_DELAY_SECONDS"
        ),
    )
    queue_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DEVICE_BULK_CHANGE_QUEUE_URL", "BULKCHANGE_QUEUE_URL"),
    )
    get_status_request_url: str = Field(
        default="/api/m2m/v1/accounts/{0}/requests/{1}/status",
        validation_alias=AliasChoices("THINGSPACE_GET_STATUS_REQUEST_URL", "BULKCHANGE_GET_STATUS_REQUEST_URL"),
    )

    # Engine slices and leases.
    slice_max_changes: int = Field(default=2000, ge=1)
    slice_max_seconds: float = Field(default=60.0, gt=0)
    # Devices per carrier request: up to the carrier's maximum (ThingSpace 10,000; an adapter caps it at its
    # own, Control Center sends one per call); a slice's claims are bounded by slice_max_changes anyway, so a
    # request carries at most that many. Fewer, larger requests also mean fewer calls against the carrier's
    # per-account request limits.
    batch_max_devices: int = Field(default=10000, ge=1, le=10000)
    # Batches one worker has at the carrier at once: the carrier's latency overlaps the recording of others.
    carrier_concurrency: int = Field(default=4, ge=1, le=32)
    lease_seconds: int = Field(default=300, ge=5)
    # The next slice's wake-up while changes are ready now: none by default (a 5 s pause per slice was most of
    # a large bulk change's time); a change waiting for a retry is woken when it is due regardless.
    continuation_delay_s: int = Field(default=0, ge=0, le=900)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_s: float = Field(default=5.0, ge=0)
    retry_cap_s: float = Field(default=300.0, ge=0)
    carrier_timeout_s: float = Field(default=30.0, gt=0)
    carrier_call_attempts: int = Field(default=3, ge=1)
    # How long a "call in flight" lease of a one-call-at-a-time account (Control Center) lasts: a worker that
    # died holding one blocks its account that long. 0: the longest call with its retries plus 30 s, at least
    # 120 s. A value shorter than the carrier's slowest answer lets a second call in while the first is open.
    carrier_in_flight_lease_s: float = Field(default=0.0, ge=0)
    # Carrier rate limits shared by every worker (ENDPOINT=LIMIT/SECONDS, comma-separated), per account.
    # ThingSpace documents 100 Activate requests per minute; other endpoints publish no limit.
    carrier_rate_limits: str = "devices/actions/activate=100/60"
    # Reconcile (outcome unknown): how long an unchanged device is given before the step is sent again,
    # how often an inconclusive read is retried, and when to give up and ask a person (NEEDS_REVIEW).
    reconcile_window_s: int = Field(default=120, ge=0)
    reconcile_retry_s: int = Field(default=30, ge=0)
    reconcile_giveup_s: int = Field(default=1800, ge=1)
    # A callback that finds no awaiting change is kept this long for its change to appear (it can beat our
    # commit of the requestId), then marked unmatched.
    callback_match_grace_s: int = Field(default=60, ge=0)

    # Input files (engine/submit.py): bigger files and longer bulk changes are refused with a clear error
    # before anything is read into memory (a file's size) or created (its rows).
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    max_rows_per_bulk_change: int = Field(default=100_000, ge=1)

    # A lost database or queue connection is waited out, not fatal: every loop (worker, callback applier,
    # wake-up relay) tries again after a jittered, capped exponential backoff (domain/retry.py), and a
    # wake-up the queue refused is sent again on the same schedule (engine/outbox.py).
    outage_retry_base_s: float = Field(default=0.5, gt=0)
    outage_retry_cap_s: float = Field(default=10.0, gt=0)

    # Embedded queue (SQS semantics).
    queue_visibility_timeout_s: int = Field(default=600, ge=1)
    queue_max_receives: int = Field(default=5, ge=1)

    # AWS (SQS transport, Lambda handler, credentials by reference). Region and endpoint default to
    # boto3's own configuration (AWS_REGION, AWS_ENDPOINT_URL, ...); the region is also read from a
    # standard queue URL (https://sqs.<region>.amazonaws.com/...).
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    sqs_wait_time_s: int = Field(default=20, ge=0, le=20)
    # The Lambda stops taking new records with less than this left (the original's 60 s cutoff), and a
    # record's engine slice ends this long before the function would time out.
    lambda_time_cutoff_s: float = Field(default=60.0, ge=0)
    # The function's configured timeout (deploy/template.yaml's FunctionTimeout): `bulkchange aws check`
    # compares the queue's visibility timeout with it, and the tick's stalled wake-up age derives from it.
    lambda_function_timeout_s: int = Field(default=300, ge=1, le=900)
    # The tick wakes a bulk change whose wake-up is this overdue (default: twice the function timeout, the
    # longest a received wake-up can wait inside an invocation before it is started, with room to spare).
    lambda_stalled_after_s: int | None = Field(default=None, ge=1)
    # CloudWatch namespace of the embedded-metric-format counts the Lambda handler writes (refused messages).
    metrics_namespace: str = "bulkchange"
    # How long a value read from SSM Parameter Store / Secrets Manager is reused before it is read again.
    credentials_cache_ttl_s: float = Field(default=300.0, ge=0)

    # The CarrierService callback receivers — ``serve``'s route and the Lambda handler alike, through one
    # gate (engine/callbacks/gate.py). Credentials are per service provider, in the database; these bound
    # what any caller may send.
    callback_allowed_sources: str = ""  # comma-separated addresses or networks; empty = any source
    callback_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    callback_max_json_depth: int = Field(default=32, ge=4, le=256)
    # No longer read: one global username/password let any provider's caller settle another provider's
    # changes. Still declared so that a deployment that sets them is told (at start-up) what to do instead.
    legacy_callback_username: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BULKCHANGE_CALLBACK_USERNAME", "legacy_callback_username")
    )
    legacy_callback_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("BULKCHANGE_CALLBACK_PASSWORD", "legacy_callback_password")
    )

    # Identity written into ModifiedBy / ProcessBy.
    process_by: str = "bulkchange"
    log_level: str = "INFO"

    @property
    def stalled_after_s(self) -> int:
        """How overdue a wake-up must be before the Lambda tick wakes its bulk change again."""
        return self.lambda_stalled_after_s or 2 * self.lambda_function_timeout_s


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
