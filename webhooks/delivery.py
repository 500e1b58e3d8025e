"""The delivery loop: each serving process (``onair.serve``) runs ``deliver_forever`` from
its start to its stop. The database's rows are the outbox: whatever a process did not
deliver before it stopped or died is due again, for it when it starts or for another one.

Each round claims the deliveries due (``webhook_deliveries_claim``: on PostgreSQL rows
another process claims are skipped, so several processes share the work), POSTs each in a
thread of its own (the event loop never waits on a receiver), records each outcome, and
sleeps until the next delivery is due, the next poll (``WEBHOOK_POLL_SECONDS``: another
process's events), or an event of this process is enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from channels.db import database_sync_to_async
from django.db import Error as DatabaseError
from django.utils import timezone

from onair.conf import onair_settings
from webhooks.services import (
    ClaimedDelivery,
    enqueued_listen,
    webhook_deliveries_claim,
    webhook_delivery_record,
)
from webhooks.transport import Outcome, headers_signed, post

logger = logging.getLogger("onair.webhooks")

# Deliveries one round sends at once (threads); the rest are claimed by the next round.
BATCH = 8
# After the database failed: wait this long before the next round.
ERROR_PAUSE_SECONDS = 5.0


async def deliver_forever() -> None:
    """Deliver due webhooks until cancelled."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    undo = enqueued_listen(lambda: _wake(loop, wake))
    database_down = False
    try:
        while True:
            wake.clear()
            try:
                next_due = await deliver_due()
            except DatabaseError as error:
                # the database is away (readiness says so too): the rows wait, the server
                # carries on; one warning per outage
                if not database_down:
                    logger.warning("webhook deliveries wait for the database: %s", error)
                database_down = True
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            except Exception:
                logger.exception("webhook delivery round failed")
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            if database_down:
                logger.warning("webhook deliveries resumed: the database answers")
                database_down = False
            if next_due is None:
                continue  # a full batch: claim the next one at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), next_due)
    finally:
        undo()


def _wake(loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed (the process stops)
        loop.call_soon_threadsafe(wake.set)


async def deliver_due() -> float | None:
    """One round: send what is due; ``None`` if there may be more due at once, else how
    long to sleep before looking again."""
    claimed = await database_sync_to_async(webhook_deliveries_claim)(limit=BATCH)
    if claimed.deliveries:
        await asyncio.gather(*(_attempt(delivery) for delivery in claimed.deliveries))
    if len(claimed.deliveries) == BATCH:
        return None
    return _sleep_for(claimed.next_due)


def _sleep_for(next_due: datetime | None) -> float:
    poll = onair_settings().webhooks.poll_seconds
    if next_due is None:
        return poll
    return max(0.0, min(poll, (next_due - timezone.now()).total_seconds()))


async def _attempt(delivery: ClaimedDelivery) -> None:
    conf = onair_settings().webhooks
    headers = headers_signed(
        event_id=delivery.event_id, secret=delivery.secret, body=delivery.body, now=time.time()
    )
    outcome = await _in_thread(
        lambda: post(
            delivery.url,
            body=delivery.body,
            headers=headers,
            timeout=conf.timeout_seconds,
            allow_private=conf.allow_private,
        )
    )
    await database_sync_to_async(webhook_delivery_record)(
        delivery_id=delivery.id,
        attempt=delivery.attempt,
        ok=outcome.ok,
        status=outcome.status,
        error=outcome.error,
    )


async def _in_thread(call: Callable[[], Outcome]) -> Outcome:
    """``call()`` in a daemon thread: a receiver that holds its connection to the timeout
    never delays the process's exit (the default executor's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Outcome] = loop.create_future()

    def run() -> None:
        try:
            outcome = call()
        except Exception as exc:  # ``post`` catches what it expects; anything else fails it
            logger.exception("webhook attempt failed")
            outcome = Outcome(False, None, f"internal error: {type(exc).__name__}")
        with contextlib.suppress(RuntimeError):  # the loop closed (the process stops)
            loop.call_soon_threadsafe(_settle, done, outcome)

    threading.Thread(target=run, name="webhook-post", daemon=True).start()
    return await done


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():  # else the waiting task was cancelled (the process stops)
        future.set_result(outcome)
