"""Readiness (``/readyz``): whether this process can serve now, for a load balancer or an
orchestrator: the database answers, the channel layer carries a message to this process
and back, and in cluster mode at least one SFU worker is alive. ``/healthz`` stays the
liveness check (the process answers at all).

Each check has ``CHECK_TIMEOUT_SECONDS``; they run at once. A dependency that is down is
logged once, as a WARNING, when readiness changes (and once more when it comes back), not
at each probe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from onair.conf import cluster_mode

logger = logging.getLogger("onair.readiness")

CHECK_TIMEOUT_SECONDS = 2.0

_failing: frozenset[str] = frozenset()  # what failed at the last probe of this process


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]  # check → "ok", or what went wrong

    @property
    def failed(self) -> list[str]:
        return sorted(name for name, result in self.checks.items() if result != "ok")

    @property
    def ready(self) -> bool:
        return not self.failed


async def readiness_check() -> Readiness:
    """Run every check (at once, each within ``CHECK_TIMEOUT_SECONDS``)."""
    checks = {"database": _database(), "channel_layer": _channel_layer()}
    if cluster_mode():
        checks["sfu_workers"] = _sfu_workers()
    results = await asyncio.gather(*(_outcome(check) for check in checks.values()))
    readiness = Readiness(dict(zip(checks, results, strict=True)))
    _log_change(readiness)
    return readiness


async def _outcome(check: Coroutine[Any, Any, None]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # any failure of a dependency is an answer here, not a crash
        return f"failed ({type(exc).__name__})"
    return "ok"


def _select_one() -> None:
    # Its own connection, closed after: a thread of its own (not the one Django's
    # synchronous code shares), so that a database that hangs holds up nothing else.
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


async def _database() -> None:
    await sync_to_async(_select_one, thread_sensitive=False)()


async def _channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer")
    # The default prefix, as the consumers' channels: channels-redis reads a process's
    # channels through one list per prefix, and another prefix waits behind their reads.
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "readiness.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "readiness.ping":
        raise RuntimeError("the channel layer returned another message")


class NoLiveWorkerError(Exception):
    pass


async def _sfu_workers() -> None:
    # Imported here: only cluster mode has a worker directory (its Redis).
    from signaling.gateway.directory import WorkerDirectory

    directory = WorkerDirectory.from_settings()
    try:
        if not await directory.workers():
            raise NoLiveWorkerError
    finally:
        await directory.close()


def _log_change(readiness: Readiness) -> None:
    global _failing
    failing = frozenset(readiness.failed)
    if failing == _failing:
        return
    _failing = failing
    if failing:
        details = ", ".join(f"{name}: {readiness.checks[name]}" for name in sorted(failing))
        logger.warning("not ready: %s", details)
    else:
        logger.info("ready again")
