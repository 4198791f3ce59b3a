"""``bulkchange aws check``: does this deployment's configuration work, seen from inside it?

Run where the function or the worker runs (same environment, same role), it checks, one line each:

* **queue** — ``DEVICE_BULK_CHANGE_QUEUE_URL`` (or ``--queue-url``) answers ``GetQueueAttributes``;
* **dead-letter queue** — the queue has a ``RedrivePolicy`` whose target queue exists;
* **visibility timeout** — at least 6 × the function timeout (``BULKCHANGE_LAMBDA_FUNCTION_TIMEOUT_S`` or
  ``--function-timeout``), AWS's advice for an SQS event source;
* **credential references** — every ``ssm:`` / ``secretsmanager:`` reference in the configuration (the
  database URL, ``BULKCHANGE_SECRET_KEYS``, the webhook settings) and in the credential rows in use
  (ThingSpace, Rev.io, webhook destinations) names a value this role can read;
* **database** — reachable, and migrated to the head revision of this version.

Each check is a ``CheckResult``; the command prints them and exits non-zero when one failed. Nothing is
changed anywhere, and no secret value is printed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from bulkchange.aws.unstarted import queue_name_of
from bulkchange.integrations.settings import IntegrationSettings
from bulkchange.queue.sqs import region_from_queue_url, sqs_client
from bulkchange.security.crypto import KEYS_ENV
from bulkchange.security.references import CredentialReferenceError, CredentialResolver, is_reference
from bulkchange.services.credentials import stored_references
from bulkchange.settings import Settings
from bulkchange.store.db import make_engine, make_session_factory
from bulkchange.store.migrate import current_revision, head_revisions

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

VISIBILITY_FACTOR = 6
_AWS_ERRORS = (BotoCoreError, ClientError)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def run_checks(
    settings: Settings,
    *,
    queue_url: str | None = None,
    function_timeout_s: int | None = None,
    resolver: CredentialResolver | None = None,
    sqs: SQSClient | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Every check of the module docstring, in order (see ``CheckResult``)."""
    resolver = resolver or CredentialResolver(
        ttl_s=0, region=settings.aws_region, endpoint_url=settings.aws_endpoint_url
    )
    url = queue_url or settings.queue_url
    timeout_s = function_timeout_s or settings.lambda_function_timeout_s
    results = check_queue(settings, url, timeout_s, sqs)
    database_url, database_result = _database_url(settings, resolver)
    references = configuration_references(settings, os.environ if environ is None else environ)
    if database_url is not None:
        results.append(check_database(database_url))
        references += _stored(database_url)
    elif database_result is not None:
        results.append(database_result)
    results.extend(check_references(references, resolver))
    return results


# ------------------------------------------------------------------------------------------- queue


def check_queue(
    settings: Settings, url: str | None, function_timeout_s: int, sqs: SQSClient | None
) -> list[CheckResult]:
    if not url:
        return [CheckResult("queue", False, "no queue URL: set DEVICE_BULK_CHANGE_QUEUE_URL or pass --queue-url")]
    client = sqs or sqs_client(
        region=settings.aws_region or region_from_queue_url(url), endpoint_url=settings.aws_endpoint_url
    )
    try:
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
    except _AWS_ERRORS as exc:
        return [CheckResult("queue", False, f"{url} does not answer: {_aws_error(exc)}")]
    results = [CheckResult("queue", True, f"{url} reachable")]
    results.append(_dead_letter_queue(client, attributes.get("RedrivePolicy")))
    visibility = int(attributes.get("VisibilityTimeout", "0"))
    needed = VISIBILITY_FACTOR * function_timeout_s
    results.append(
        CheckResult(
            "visibility timeout",
            visibility >= needed,
            f"{visibility} s, {'≥' if visibility >= needed else 'below'} {VISIBILITY_FACTOR} × the function timeout "
            f"{function_timeout_s} s = {needed} s",
        )
    )
    return results


def _dead_letter_queue(client: SQSClient, redrive_policy: str | None) -> CheckResult:
    name = "dead-letter queue"
    if not redrive_policy:
        return CheckResult(name, False, "the queue has no RedrivePolicy: failing messages would be retried forever")
    policy: dict[str, Any] = json.loads(redrive_policy)
    arn = str(policy.get("deadLetterTargetArn", ""))
    named = queue_name_of(arn)
    if named is None:
        return CheckResult(name, False, f"RedrivePolicy names no SQS queue ({arn!r})")
    _region, account, queue_name = named
    try:
        dlq_url = client.get_queue_url(QueueName=queue_name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    except _AWS_ERRORS as exc:
        return CheckResult(name, False, f"{arn} cannot be found: {_aws_error(exc)}")
    return CheckResult(name, True, f"{dlq_url}, after {policy.get('maxReceiveCount')} receives")


# ------------------------------------------------------------------------------------------- database


def _database_url(settings: Settings, resolver: CredentialResolver) -> tuple[str | None, CheckResult | None]:
    try:
        return resolver.resolve(settings.database_url), None
    except (CredentialReferenceError, *_AWS_ERRORS) as exc:
        return None, CheckResult("database", False, f"BULKCHANGE_DATABASE_URL cannot be resolved: {exc}")


def check_database(database_url: str) -> CheckResult:
    try:
        current = current_revision(database_url)
    except (SQLAlchemyError, OSError) as exc:
        return CheckResult("database", False, f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    heads = head_revisions()
    if current in heads:
        return CheckResult("database", True, f"reachable, migrated to head ({current})")
    expected = ", ".join(sorted(heads))
    return CheckResult(
        "database", False, f"reachable, at revision {current or 'none'}, not {expected}: run `bulkchange db upgrade`"
    )


def _stored(database_url: str) -> list[tuple[str, str]]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return stored_references(session)
    except SQLAlchemyError:
        return []  # the database check says why
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------- references


def configuration_references(settings: Settings, environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(where, reference)`` for each reference in the settings, the integration settings and the key list."""
    values = settings.model_dump()
    # An invalid webhook setting fails wherever it is read; this check is about references.
    with contextlib.suppress(ValidationError):
        values.update(IntegrationSettings().model_dump())
    found = [
        (f"BULKCHANGE_{name.upper()}", value)
        for name, value in values.items()
        if isinstance(value, str) and is_reference(value)
    ]
    keys = environ.get(KEYS_ENV, "").strip()
    if is_reference(keys):
        found.append((KEYS_ENV, keys))
    return found


def check_references(references: Iterable[tuple[str, str]], resolver: CredentialResolver) -> list[CheckResult]:
    """One failure line per reference that does not resolve; one line for all that do."""
    results: list[CheckResult] = []
    good = 0
    tried: dict[str, str | None] = {}
    for where, reference in references:
        if reference not in tried:
            tried[reference] = _resolve_error(resolver.resolve, reference)
        error = tried[reference]
        if error is None:
            good += 1
        else:
            results.append(CheckResult("credential reference", False, f"{where} = {reference}: {error}"))
    if not results:
        results.append(CheckResult("credential references", True, f"{good} reference(s) resolve"))
    return results


def _resolve_error(resolve: Callable[[str], str], reference: str) -> str | None:
    try:
        resolve(reference)
    except CredentialReferenceError as exc:
        return str(exc)
    except _AWS_ERRORS as exc:
        return _aws_error(exc)
    return None


def _aws_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
