"""Log record formats for the CLI: text for people, JSON lines for log collectors.

`--log-format json` (or `TASKORCH_LOG_FORMAT=json`) writes one JSON object per
line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, `exception` when
there is one, and `trace_id` / `span_id` when the record was logged inside a
span (see `executor.tracing`), so a log line can be found from its trace.
The `LogGuard` filter has scrubbed and bounded the record before it gets here.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from server.config.paths import LOG_LEVELS

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "TEXT_FORMAT", "JsonFormatter", "make_formatter"]

LOG_FORMATS = ("text", "json")
"""The formats `--log-format` takes."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format's layout."""


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # No span exists before the first one loaded the API (`executor.tracing`): a
        # command that makes none (`plans`, `show`) never loads it for its logs.
        trace = sys.modules.get("opentelemetry.trace")
        context = trace.get_current_span().get_span_context() if trace is not None else None
        if context is not None and context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for `log_format` (`text` or `json`; checked by the caller)."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)
