"""What a process serving broadcasts does when it starts and when it stops.

Stopping (SIGTERM or SIGINT to ``python -m onair.serve`` or ``manage.py runsfu``): the
viewers of every broadcast the process holds hear that its publisher is reconnecting, its
routers close (publishers' and viewers' peer connections end, WHEP viewers are uncounted)
and the process exits. The broadcasts stay live in the database, so a publisher that
reconnects, to the process restarted or to another one, carries them on.

Starting: a broadcast left live by a process that died without stopping (SIGKILL, a crash,
a power loss) has nobody publishing. It gets the publisher grace period, as a publisher
that lost its connection does, and ends then unless a publisher came back; in embedded
mode the viewer counts the dead process left are reset (it was the only one counting), and
the recordings it left open are finished from their spool files
(``signaling.gateway.recording``).
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.utils import timezone

from broadcast.selectors import stream_ids_live
from onair.conf import cluster_mode
from recordings.models import Recording
from signaling.gateway import gateway, recordings_repair
from viewers.services import viewer_counts_reset

logger = logging.getLogger(__name__)


async def embedded_sfu_started() -> None:
    """A daphne process starts. In embedded mode it is the only process serving media and
    counting viewers: what the database says is live or watching was left by one that
    died. (In cluster mode the ``runsfu`` workers reconcile: ``signaling.gateway.worker``.)"""
    if cluster_mode():
        return
    started = timezone.now()
    live = await database_sync_to_async(stream_ids_live)()
    uncounted = await database_sync_to_async(viewer_counts_reset)()
    for stream_id in live:
        gateway.expect_publisher(stream_id=str(stream_id))
    if live or uncounted:
        logger.info(
            "started: %d broadcasts left live wait for their publishers; %d viewer sessions "
            "left open were ended",
            len(live),
            uncounted,
        )
    repaired = await recordings_repair(before=started, running=_recorded_here)
    if repaired:
        logger.info("started: %d recordings left open were finished", repaired)


async def _recorded_here(recording: Recording) -> bool:
    """A router of this process writes ``recording`` (a publisher came back meanwhile)."""
    status = await gateway.recording_status(stream_id=str(recording.stream_id))
    return status is not None and status.recording_id == str(recording.pk)


async def sfu_stopping() -> None:
    """This process is about to stop: no new sessions; viewers hear "reconnecting"."""
    await gateway.stopping()


async def sfu_stop(*, wait_seconds: float) -> None:
    """Close every router (see the module docstring), waiting up to ``wait_seconds`` for the
    work that sets off (WHEP viewers uncounted)."""
    await gateway.close_all(wait_seconds=wait_seconds)
