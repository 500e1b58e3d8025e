"""Who a log line is about, for a log pipeline to follow one client through every process:
``stream`` (the stream's slug), ``session`` (a public id per WebSocket and per WHIP/WHEP
session: never its token, the capability in the session's URL) and ``worker`` (the cluster
SFU worker). They are set where a request comes in (``signaling.consumers``,
``signaling.views``) and in each ``runsfu`` worker, carried with every request across the
cluster gateway (``signaling.gateway.cluster``), and asyncio copies them into the tasks a
request starts, so the SFU's lines for a viewer carry its session too. ``LogContext``, a
filter of the log handler, puts them on every record (``extra=`` fields win)."""

from __future__ import annotations

import logging
import secrets
from contextvars import ContextVar

FIELDS = ("stream", "session", "worker")

_vars: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"onair_log_{name}", default=None) for name in FIELDS
}


def log_context() -> dict[str, str]:
    """The ids set in this context."""
    return {name: value for name, var in _vars.items() if (value := var.get()) is not None}


def log_context_set(**values: str | None) -> None:
    """Set ids (of ``FIELDS``) for this task and the tasks it starts from now on."""
    for name, value in values.items():
        _vars[name].set(value)


def public_session_id(kind: str) -> str:
    """A new session's id for the logs: ``<kind>-`` and 12 hex digits, unrelated to any
    token."""
    return f"{kind}-{secrets.token_hex(6)}"


class LogContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in log_context().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True
