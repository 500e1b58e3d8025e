"""Structured logs: a line per event, with the ``extra={...}`` fields (and the log context's
ids, ``onair.logcontext``) as ``key=value``, or, with ``LOG_FORMAT=json``, one JSON object
per line."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from django.core.exceptions import ImproperlyConfigured

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


class JsonFormatter(logging.Formatter):
    """``{"time": "2026-11-25T22:30:00.000+00:00", "level": "INFO", "logger": "sfu.router",
    "message": "viewer joined", "router_id": "7", "session": "whep-…", …}``: the fields of
    ``KeyValueFormatter``'s line, the traceback as ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in sorted(vars(record).items()):
            if key not in _STANDARD and key not in entry:
                plain = isinstance(value, str | int | float | bool | type(None))
                entry[key] = value if plain else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


LOG_FORMATS = ("plain", "json")


# What must never reach a log: WHIP/WHEP session tokens (the capability in a session URL),
# stream keys, webhook signing secrets, and bearer/API tokens.
_SECRETS = (
    # (not "<token>" again: redacting twice, a message and its field, changes nothing)
    (re.compile(r"(/(?:whip|whep)/[^/\s?#'\"]+/)[^/\s?#'\"<>]+"), r"\1<token>"),
    (re.compile(r"\bsk_[A-Za-z0-9_-]{8,}"), "sk_<redacted>"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_-]{8,}"), "whsec_<redacted>"),
    (re.compile(r"\b(Bearer|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), r"\1 <redacted>"),
)


def redact(text: str) -> str:
    """``text`` with every session token, stream key, webhook secret and bearer token
    replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    turn_secret = _turn_secret()
    return text.replace(turn_secret, "<redacted>") if turn_secret else text


def _turn_secret() -> str:
    from onair.conf import onair_settings  # the filter may run before settings are usable

    try:
        return onair_settings().ice.turn_secret
    except (ImproperlyConfigured, ValueError):
        # No settings yet, or invalid ones (the process is failing to start): no secret.
        return ""


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, and its ``extra`` fields (Django's ``django.request``
    records carry the request, whose repr holds its path), without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed call: logging reports it as such
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not isinstance(value, int | float | bool | type(None)):
                text = str(value)
                if redact(text) != text:
                    setattr(record, key, redact(text))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class SuspiciousRequestsAsWarnings(logging.Filter):
    """Django logs every ``SuspiciousOperation`` at ERROR, under ``django.security.*``: a
    ``Host`` not in ``ALLOWED_HOSTS``, a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, too many
    form fields. Any client can send those, and gets a 400: they are warnings here, without
    the traceback Django attaches, so that ERROR keeps meaning the server failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security.") and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True
