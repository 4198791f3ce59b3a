"""`bulkchange aws check` on the loopback AWS API (moto server): a good deployment passes every line; each
broken part — no dead-letter queue, a visibility timeout too short for the function, a reference naming
nothing, a database not migrated, a queue that does not exist — is one FAIL line and a non-zero exit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from bulkchange.cli.main import app
from bulkchange.providers import add_provider
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings
from bulkchange.store.tables import ThingSpaceAuthentication

from .conftest import REGION, Queue


def _name() -> str:
    return f"/bulkchange/check/{uuid.uuid4().hex[:10]}"


class Deployment:
    """A migrated SQLite database whose URL is in SSM, and a provider whose secrets are references."""

    def __init__(self, tmp_path: Path) -> None:
        self.ssm = boto3.client("ssm", region_name=REGION)
        self.secrets = boto3.client("secretsmanager", region_name=REGION)
        self.database_url = f"sqlite:///{tmp_path}/check.sqlite3"
        self.url_parameter = _name()
        self.ssm.put_parameter(Name=self.url_parameter, Value=self.database_url, Type="SecureString")
        password = _name()
        self.ssm.put_parameter(Name=password, Value="sim-pass", Type="SecureString")
        secret = f"bulkchange/{uuid.uuid4().hex[:8]}"
        self.secrets.create_secret(Name=secret, SecretString=json.dumps({"client_secret": "sim-secret"}))
        rt = build_runtime(Settings(database_url=self.database_url))  # migrates to head
        with rt.session_factory() as session:
            self.provider_id = add_provider(
                session,
                name="acme",
                base_url="https://thingspace.example",
                client_id="sim-client",
                client_secret=f"secretsmanager:{secret}#client_secret",
                username="sim-user",
                password=f"ssm:{password}",
                account="0000123456-00001",
            )
        self.rt = rt

    def env(self, queue_url: str, **extra: str) -> dict[str, str]:
        return {
            "BULKCHANGE_DATABASE_URL": f"ssm:{self.url_parameter}",
            "DEVICE_BULK_CHANGE_QUEUE_URL": queue_url,
            "BULKCHANGE_LAMBDA_FUNCTION_TIMEOUT_S": "300",
            **extra,
        }


@pytest.fixture
def deployment(tmp_path: Path, aws_env: str) -> Deployment:
    d = Deployment(tmp_path)
    yield d  # type: ignore[misc]
    d.rt.close()


def check(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["aws", "check", *args], env=env)
    return result.exit_code, [line for line in result.stdout.splitlines() if line.strip()]


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


@pytest.mark.parametrize("queue_kwargs", [{"visibility_timeout_s": 1800, "max_receive_count": 5}])
def test_a_good_deployment_passes_every_check(deployment: Deployment, queue: Queue) -> None:
    code, lines = check(deployment.env(queue.url))

    assert code == 0, lines
    assert failures(lines) == []
    names = [line.split(":", 1)[0].split(None, 1)[1] for line in lines]
    assert names == ["queue", "dead-letter queue", "visibility timeout", "database", "credential references"]
    assert f"{queue.url} reachable" in lines[0]
    assert queue.dlq_url in lines[1] and "after 5 receives" in lines[1]
    assert "1800 s" in lines[2] and "1800 s" in lines[2].split("=")[-1]
    assert "migrated to head" in lines[3]
    assert lines[4].endswith("3 reference(s) resolve")  # the database URL, the password, the client secret
    assert "sim-pass" not in "\n".join(lines) and "sim-secret" not in "\n".join(lines)


@pytest.mark.parametrize("queue_kwargs", [{"visibility_timeout_s": 30, "max_receive_count": 5}])
def test_a_visibility_timeout_shorter_than_six_function_timeouts_fails(deployment: Deployment, queue: Queue) -> None:
    code, lines = check(deployment.env(queue.url), "--function-timeout", "60")

    assert code == 1
    assert failures(lines) == ["FAIL  visibility timeout: 30 s, below 6 × the function timeout 60 s = 360 s"]


def test_a_queue_without_a_dead_letter_queue_fails(deployment: Deployment, aws_env: str) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=f"bare-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "1800"})[
        "QueueUrl"
    ]

    code, lines = check(deployment.env(url))

    assert code == 1
    [line] = failures(lines)
    assert line.startswith("FAIL  dead-letter queue: the queue has no RedrivePolicy")


def test_a_queue_that_does_not_exist_fails(deployment: Deployment, make_queue: Callable[..., Queue]) -> None:
    missing = make_queue().url.rsplit("/", 1)[0] + "/no-such-queue"

    code, lines = check(deployment.env(missing))

    assert code == 1
    assert failures(lines)[0].startswith(f"FAIL  queue: {missing} does not answer")


@pytest.mark.parametrize("queue_kwargs", [{"visibility_timeout_s": 1800, "max_receive_count": 5}])
def test_a_reference_that_names_nothing_fails_with_where_it_is(deployment: Deployment, queue: Queue) -> None:
    with deployment.rt.session_factory.begin() as session:
        session.execute(
            update(ThingSpaceAuthentication).values(password="ssm:/bulkchange/check/deleted-password")
        )

    code, lines = check(deployment.env(queue.url, BULKCHANGE_SECRET_KEYS="ssm:/bulkchange/check/no-keys"))

    assert code == 1
    assert failures(lines) == [
        "FAIL  credential reference: BULKCHANGE_SECRET_KEYS = ssm:/bulkchange/check/no-keys: credential reference "
        "'ssm:/bulkchange/check/no-keys' names nothing (ParameterNotFound)",
        f"FAIL  credential reference: ThingSpaceAuthentication {deployment.provider_id} password = "
        "ssm:/bulkchange/check/deleted-password: credential reference "
        "'ssm:/bulkchange/check/deleted-password' names nothing (ParameterNotFound)",
    ]


@pytest.mark.parametrize("queue_kwargs", [{"visibility_timeout_s": 1800, "max_receive_count": 5}])
def test_a_database_not_migrated_or_unreachable_fails(tmp_path: Path, deployment: Deployment, queue: Queue) -> None:
    empty = tmp_path / "empty.sqlite3"
    empty.touch()

    code, lines = check(deployment.env(queue.url, BULKCHANGE_DATABASE_URL=f"sqlite:///{empty}"))

    assert code == 1
    [line] = failures(lines)
    assert line.startswith("FAIL  database: reachable, at revision none, not ")
    assert line.endswith("run `bulkchange db upgrade`")

    code, lines = check(
        deployment.env(queue.url, BULKCHANGE_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    )
    assert code == 1 and failures(lines)[0].startswith("FAIL  database: unreachable: OperationalError")
