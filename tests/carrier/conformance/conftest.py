"""The harnesses the conformance suite runs against: one per carrier adapter, each with its simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bulkchange.carrier.port import CarrierSession, SessionServices

from .harness import CarrierHarness
from .thingspace_harness import ThingSpaceHarness

HARNESSES: list[type[CarrierHarness]] = [ThingSpaceHarness]


@pytest.fixture(params=HARNESSES, ids=lambda harness: harness.carrier.name)
def harness(request: pytest.FixtureRequest) -> Iterator[CarrierHarness]:
    with request.param() as started:
        yield started


def services(harness: CarrierHarness, **overrides: object) -> SessionServices:
    """One attempt per call, so a fault put on the next call is what the session sees."""
    values: dict[str, object] = {"timeout_s": harness.timeout_s, "call_attempts": 1, **overrides}
    return SessionServices(**values)  # type: ignore[arg-type]


@pytest.fixture
async def session(harness: CarrierHarness) -> AsyncIterator[CarrierSession]:
    opened = harness.carrier.connect(harness.account(), services(harness))
    yield opened
    await opened.aclose()
