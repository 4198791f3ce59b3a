"""Schemathesis against ``/openapi.json`` of the served application: every operation, generated requests
(valid and invalid), no 5xx and no answer outside the documented status codes, content types, headers and
response schemas. Bounded examples keep it fast."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bulkchange.api.app import create_app
from bulkchange.api.settings import ApiSettings
from bulkchange.runtime import build_runtime
from bulkchange.settings import Settings

from .conftest import Api, activation_row, make_api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One served application for the module, with a finished bulk change so reads find data."""
    for api in make_api(tmp_path_factory.mktemp("schemathesis")):
        bulk_id = api.create([activation_row() for _ in range(2)]).json()["id"]
        api.wait_processed(bulk_id)
        yield api


def _spec() -> dict[str, Any]:
    """The application's OpenAPI document (the same one /openapi.json serves; no database is touched)."""
    rt = build_runtime(Settings(database_url="sqlite://"), migrate=False)
    try:
        return create_app(rt, api_settings=ApiSettings()).openapi()
    finally:
        rt.close()


schema = schemathesis.openapi.from_dict(_spec())


def test_served_document_is_the_one_tested(served: Api) -> None:
    assert served.http.get("/openapi.json").json() == _spec()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_openapi_conformance(case: schemathesis.Case, served: Api) -> None:
    case.call_and_validate(base_url=served.base_url, checks=CHECKS, timeout=30)
