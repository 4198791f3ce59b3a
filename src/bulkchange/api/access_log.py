"""The access log of ``bulkchange serve``: uvicorn's, less one line per acknowledged carrier callback.

A carrier answers a bulk change of 10,000 devices with 10,000 callbacks in a burst. A line for each one
that was stored says nothing the database and /metrics do not already say better (every stored callback
is a row of ``ThingSpaceCallBackResponseLog`` / the provider's callback table, and
``bulkchange_callbacks_received_total{result}`` counts them), and writing it costs the receiver more CPU
than parsing the callback. So a callback POST answered 2xx is left out; a refused one (4xx, 503) is logged
like every other request, and so is every request to the API, the dashboard and the probes.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

CALLBACK_PREFIX = "/callbacks/"


class SkipAcknowledgedCallbacks(logging.Filter):
    """Drops uvicorn access records of callback POSTs answered 2xx.

    uvicorn's access record carries ``(client, method, path with query, http version, status)`` as its
    arguments; a record of any other shape is kept as it is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _client, method, path, _version, status = args
        acknowledged = isinstance(status, int) and 200 <= status < 300
        return not (acknowledged and method == "POST" and str(path).startswith(CALLBACK_PREFIX))


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with ``SkipAcknowledgedCallbacks`` on its access logger."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["skip_acknowledged_callbacks"] = {"()": SkipAcknowledgedCallbacks}
    config["loggers"]["uvicorn.access"]["filters"] = ["skip_acknowledged_callbacks"]
    return config
