"""Reading an operator's carrier rate limits: ``ENDPOINT=LIMIT/SECONDS``, comma-separated.

An adapter combines these with its carrier's documented limits (``Carrier.rate_rules``); the engine's
shared limiter enforces the result per account.
"""

from __future__ import annotations

from collections.abc import Mapping

from bulkchange.carrier.port import RateRule


def parse_rate_rules(text: str) -> dict[str, RateRule]:
    """``"devices/actions/activate=100/60, devices/actions/deactivate=200/60"`` → rules by endpoint.

    A missing period means 60 seconds; an empty text means no rules. Raises ``ValueError`` naming the
    offending part when a limit or period is not a positive number.
    """
    rules: dict[str, RateRule] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        endpoint, _, spec = part.partition("=")
        limit, _, period = spec.partition("/")
        try:
            rule = RateRule(int(limit), float(period or 60))
        except ValueError as exc:
            raise ValueError(f"rate limit {part!r}: expected ENDPOINT=LIMIT/SECONDS") from exc
        if rule.limit < 1 or rule.period_s <= 0:
            raise ValueError(f"rate limit {part!r}: limit and period must be positive")
        rules[endpoint.strip()] = rule
    return rules


def with_overrides(defaults: Mapping[str, RateRule], configured: str) -> dict[str, RateRule]:
    """The carrier's ``defaults`` with every endpoint the operator ``configured`` replaced or added."""
    return {**defaults, **parse_rate_rules(configured)}
