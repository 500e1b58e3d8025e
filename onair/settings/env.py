"""Small, typed readers for the environment variables the settings modules use."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, *, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else parse_bool(name, raw)


def parse_bool(name: str, raw: str) -> bool:
    """``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off`` (any case); ``""`` is off."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; empty items are dropped."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# SQLite for concurrent writers (docs/SECURITY.md, "Database under concurrent load"):
# WAL lets readers run beside the one writer; BEGIN IMMEDIATE takes the write lock when a
# transaction starts, so a writer waits its turn (up to the busy timeout) instead of failing
# with "database is locked" when its read lock cannot be upgraded mid-transaction.
SQLITE_OPTIONS: dict[str, Any] = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
}


def database_from_url(url: str) -> dict[str, Any]:
    """A ``DATABASES["default"]`` entry from a ``DATABASE_URL``-style URL. SQLite gets
    ``SQLITE_OPTIONS``; options in the URL's query (``?timeout=60``) take precedence."""
    # No persistent connections: under ASGI each sync_to_async thread would keep its own.
    database: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database["OPTIONS"] = {**SQLITE_OPTIONS, **database.get("OPTIONS", {})}
    return database


REDIS_SOCKET_TIMEOUT = 30.0


def channel_layers(redis_url: str | None, *, prefix: str = "onair") -> dict[str, Any]:
    """channels-redis when a Redis URL is given, else the in-process layer. ``prefix``
    starts every key OnAir writes to Redis, so deployments can share one server."""
    if redis_url:
        return {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                # redis-py's default 5 s socket timeout equals channels-redis's 5 s blocking
                # receive: an idle consumer's read times out and its socket closes.
                "CONFIG": {
                    "hosts": [{"address": redis_url, "socket_timeout": REDIS_SOCKET_TIMEOUT}],
                    "prefix": prefix,
                },
            }
        }
    return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def caches(redis_url: str | None, *, prefix: str = "onair") -> dict[str, Any]:
    """Django's cache in Redis when a URL is given (shared by every process), else in this
    process's memory."""
    if redis_url:
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": f"{prefix}:cache",
            }
        }
    return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def local_secret_key(path: Path) -> str:
    """This install's own secret key, made on first use and kept in ``path`` (mode 0600):
    never a constant that every checkout of the repository shares."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key
