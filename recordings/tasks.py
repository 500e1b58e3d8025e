"""What a running server does for recordings on its own: retention, every hour."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from recordings.services import recordings_expire

logger = logging.getLogger("onair.recordings")

EXPIRE_EVERY_SECONDS = 3600.0


async def expire_periodically(*, every: float = EXPIRE_EVERY_SECONDS) -> None:
    """``recordings_expire`` now and every ``every`` seconds, until cancelled."""
    while True:
        try:
            await database_sync_to_async(recordings_expire)()
        except Exception:  # the next round tries again; the server carries on
            logger.exception("recordings retention failed")
        await asyncio.sleep(every)
