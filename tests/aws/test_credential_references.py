"""Credentials by reference (SSM Parameter Store, Secrets Manager) on the loopback AWS API, with a TTL cache."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from sqlalchemy import select, update

from bulkchange.aws import lambda_handler
from bulkchange.security.references import CredentialReferenceError, CredentialResolver, is_reference
from bulkchange.store.tables import DeviceBulkChange, ThingSpaceAuthentication
from engine.conftest import Harness, make_harness, new_iccid

from .conftest import REGION, Queue, drain, lambda_environment


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _name() -> str:
    return f"/bulkchange/test/{uuid.uuid4().hex[:10]}"


def test_ssm_secure_string_is_decrypted_and_cached_for_the_ttl(aws_env: str) -> None:
    ssm = boto3.client("ssm", region_name=REGION)
    name = _name()
    ssm.put_parameter(Name=name, Value="first", Type="SecureString")
    clock = Clock()
    resolver = CredentialResolver(ttl_s=60, clock=clock)

    assert resolver.resolve(f"ssm:{name}") == "first"
    ssm.put_parameter(Name=name, Value="rotated", Type="SecureString", Overwrite=True)
    clock.now += 59
    assert resolver.resolve(f"ssm:{name}") == "first"  # within the TTL: no second read
    assert resolver.fetches == 1
    clock.now += 2
    assert resolver.resolve(f"ssm:{name}") == "rotated"  # picked up within one TTL
    assert resolver.fetches == 2


def test_secrets_manager_whole_secret_and_json_key(aws_env: str) -> None:
    sm = boto3.client("secretsmanager", region_name=REGION)
    plain = f"bulkchange/{uuid.uuid4().hex[:8]}/plain"
    doc = f"bulkchange/{uuid.uuid4().hex[:8]}/doc"
    sm.create_secret(Name=plain, SecretString="s3cr3t")
    arn = sm.create_secret(Name=doc, SecretString=json.dumps({"password": "p@ss", "username": "u"}))["ARN"]
    resolver = CredentialResolver()

    assert resolver.resolve(f"secretsmanager:{plain}") == "s3cr3t"
    assert resolver.resolve(f"secretsmanager:{doc}#password") == "p@ss"
    assert resolver.resolve(f"secretsmanager:{arn}#username") == "u"  # an ARN (with its colons) works too
    with pytest.raises(CredentialReferenceError, match="no key"):
        resolver.resolve(f"secretsmanager:{doc}#missing")
    with pytest.raises(CredentialReferenceError, match="not a JSON object"):
        resolver.resolve(f"secretsmanager:{plain}#password")


def test_plain_values_pass_through_and_missing_references_are_refused(aws_env: str) -> None:
    resolver = CredentialResolver()
    assert resolver.resolve("sim-secret") == "sim-secret" and not is_reference("sim-secret")
    assert resolver.fetches == 0
    with pytest.raises(CredentialReferenceError, match="ParameterNotFound"):
        resolver.resolve("ssm:/bulkchange/does/not/exist")
    with pytest.raises(CredentialReferenceError, match="ResourceNotFoundException"):
        resolver.resolve("secretsmanager:bulkchange/does-not-exist")


@pytest.fixture
def h(tmp_path: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    for harness in make_harness(tmp_path, queue_url=queue.url, sqs_wait_time_s=1):
        for name, value in lambda_environment(harness.rt.settings).items():
            monkeypatch.setenv(name, value)
        yield harness


def _use_references(h: Harness, **fields: str) -> None:
    with h.rt.session_factory.begin() as s:
        s.execute(
            update(ThingSpaceAuthentication)
            .where(ThingSpaceAuthentication.service_provider_id == h.provider_id)
            .values(**fields)
        )


def test_the_lambda_reads_carrier_credentials_from_ssm_and_secrets_manager(h: Harness, queue: Queue) -> None:
    secret_param, doc = _name(), f"bulkchange/{uuid.uuid4().hex[:8]}/thingspace"
    boto3.client("ssm", region_name=REGION).put_parameter(Name=secret_param, Value="sim-secret", Type="SecureString")
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=doc, SecretString=json.dumps({"username": "sim-user", "password": "sim-pass"})
    )
    _use_references(
        h,
        client_secret=f"ssm:{secret_param}",
        username=f"secretsmanager:{doc}#username",
        password=f"secretsmanager:{doc}#password",
    )
    iccid = new_iccid()
    bulk = h.submit([{"ICCID": iccid}], status="inventory")

    drain(queue, lambda: h.counts(bulk) == {"PROCESSED": 1})

    assert h.actions(iccid) == {"add": 1}
    resolver = lambda_handler.get_runtime().ctx.secret_resolver
    assert isinstance(resolver, CredentialResolver) and resolver.fetches >= 3


def test_a_reference_to_nothing_fails_the_bulk_change_resumably(h: Harness, queue: Queue) -> None:
    _use_references(h, password="ssm:/bulkchange/nowhere/password")
    bulk = h.submit([{"ICCID": new_iccid()}], status="inventory")

    [invocation] = drain(queue, lambda: h.counts(bulk) != {"READY": 1} or _bulk_status(h, bulk) == "ERROR")

    assert invocation.response == {"batchItemFailures": []}  # a configuration problem, not a retry
    assert _bulk_status(h, bulk) == "ERROR" and h.counts(bulk) == {"READY": 1}
    with h.rt.session_factory() as s:
        details = s.execute(select(DeviceBulkChange.status_details).where(DeviceBulkChange.id == bulk)).scalar_one()
    assert "ssm:/bulkchange/nowhere/password" in (details or "")


def _bulk_status(h: Harness, bulk: int) -> str:
    with h.rt.session_factory() as s:
        return str(s.execute(select(DeviceBulkChange.status).where(DeviceBulkChange.id == bulk)).scalar_one())
