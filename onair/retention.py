"""What a running server does on its own, every hour: the retention of recordings, of the
chat and of the webhooks' delivery log (each app's ``*_expire`` service; ``onair.serve``
runs it)."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from chat.services import chat_expire
from recordings.services import recordings_expire
from webhooks.services import webhook_deliveries_expire

logger = logging.getLogger("onair.retention")

EXPIRE_EVERY_SECONDS = 3600.0


async def expire_periodically(*, every: float = EXPIRE_EVERY_SECONDS) -> None:
    """``recordings_expire``, ``chat_expire`` and ``webhook_deliveries_expire`` now and every
    ``every`` seconds, until cancelled."""
    while True:
        try:
            await database_sync_to_async(recordings_expire)()
        except Exception:  # the next round tries again; the server carries on
            logger.exception("recordings retention failed")
        try:
            await database_sync_to_async(chat_expire)()
        except Exception:
            logger.exception("chat retention failed")
        try:
            await database_sync_to_async(webhook_deliveries_expire)()
        except Exception:
            logger.exception("webhook deliveries retention failed")
        await asyncio.sleep(every)
