"""Structured logs: a line per event, with the ``extra={...}`` fields as ``key=value``."""

from __future__ import annotations

import logging

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-25 22:30:00,000 INFO sfu.router publisher joined router_id=7 publisher_id=…``"""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={value}" for key, value in sorted(fields.items()))
