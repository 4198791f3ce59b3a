"""CloudWatch metrics from the Lambda, as embedded-metric-format (EMF) log lines.

One JSON object per line on standard output; CloudWatch Logs turns the ``_aws`` block into metric data
points without any API call (and without ``cloudwatch:PutMetricData`` in the function's role). The
other keys stay searchable in the log line (Logs Insights): the SQS ``message_id``, the reason.

``RefusedMessages`` counts the wake-up messages the handler acknowledged without processing them
(``reason``: ``malformed`` attributes, an ``unknown_bulk_change`` id, ``not_sqs_record``). They never
reach the dead-letter queue — redelivering them would fail the same way — so this count, with its alarm
in deploy/template.yaml, is what makes them visible. It is published twice: without a reason (what the
alarm watches) and per reason.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

REFUSED_MESSAGES = "RefusedMessages"

Writer = Callable[[str], None]


def _stdout(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def emf_line(
    namespace: str,
    metric: str,
    value: float,
    *,
    dimensions: Mapping[str, str],
    properties: Mapping[str, Any] | None = None,
    unit: str = "Count",
    timestamp_ms: int | None = None,
) -> str:
    """One EMF document: ``metric`` published with no dimension beyond ``dimensions``' first key, and with all.

    ``dimensions`` must hold at least one name (an alarm needs a fixed dimension set to watch); the first
    is published alone as well, so ``{"Service": "bulkchange", "Reason": "malformed"}`` yields the series
    ``Service`` and ``Service, Reason``.
    """
    if not dimensions:
        raise ValueError("at least one dimension is required")
    names = list(dimensions)
    sets = [names[:1]] + ([names] if len(names) > 1 else [])
    document: dict[str, Any] = dict(properties or {})
    document.update(dimensions)
    document[metric] = value
    document["_aws"] = {
        "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        "CloudWatchMetrics": [
            {"Namespace": namespace, "Dimensions": sets, "Metrics": [{"Name": metric, "Unit": unit}]}
        ],
    }
    return json.dumps(document, separators=(",", ":"), default=str)


def count_refused(
    namespace: str, reason: str, *, message_id: str | None, write: Writer = _stdout, **properties: Any
) -> None:
    """Publish one refused message (``RefusedMessages``, dimensions ``Service`` and ``Service, Reason``)."""
    write(
        emf_line(
            namespace,
            REFUSED_MESSAGES,
            1,
            dimensions={"Service": "bulkchange", "Reason": reason},
            properties={"message_id": message_id, **properties},
        )
    )
