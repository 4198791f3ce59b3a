"""Structured logs (structlog) to stderr: JSON lines when not on a terminal, readable lines on one.

Every engine log line carries bulk_change_id (and change_id where it applies) as keys, so one bulk
change's trace can be filtered out of a busy log. ``BULKCHANGE_LOG_LEVEL=DEBUG`` turns on debug traces.
"""

from __future__ import annotations

import logging
import sys

import structlog

from bulkchange.security import redaction


class _CurrentStderr:
    """Writes each line to whatever ``sys.stderr`` is at that moment (test runners swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*_args: object) -> _CurrentStderr:
    return _CurrentStderr()


def configure_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    use_json = (not sys.stderr.isatty()) if json_lines is None else json_lines
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redaction.structlog_processor,  # the one redaction layer: no secret or token in a log line
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
