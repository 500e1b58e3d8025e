"""What Django does about what the media engine reports: the one place for it.

The embedded gateway (in daphne, or in each ``runsfu`` worker) turns the SFU's events into
gateway events (``contract.GatewayEvent``) and runs what ``react`` returns for each:

- the stream's pages hear about its publisher through the stream's channel-layer group
  (``publisher.status`` connected or reconnecting, ``publisher.replaced`` for the studio
  that was taken over);
- a watch page hears about the viewer it asked for (``viewer.connected`` once its
  connection is up: it is counted then; ``viewer.gone``; ``viewer.quality``: the video
  layer it is sent, or that its video is paused);
- a broadcast whose publisher did not come back within its grace period ends
  (``broadcast.services``, reason ``publisher_lost``);
- a publisher that dropped is a ``stream.reconnecting`` webhook (``webhooks.events``; the
  other webhooks are enqueued by the state changes themselves);
- a thumbnail of a live stream's video becomes its poster (``stream_poster_set``);
- a recording the SFU opened is noted where it is written; one it stopped is finalized,
  stored and finished (``signaling.gateway.recording``);
- a WHEP viewer is counted once connected; the WHIP/WHEP session of a peer that went away
  ends (``signaling.http_session_store``), uncounting a WHEP viewer who was counted.

A cluster worker also reports here what it learns about other workers: a dead origin's
broadcasts wait for their publisher (``origin_lost``), its pages move
(``worker_gone``), its WHIP/WHEP sessions end (``sessions_end_for_worker``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User

from broadcast.models import Stream
from broadcast.services import stream_end, stream_poster_set
from onair.exceptions import ConflictError
from signaling.gateway.contract import (
    BroadcastAbandoned,
    ConnectNotice,
    GatewayEvent,
    PosterTaken,
    PublisherDown,
    PublisherEnded,
    PublisherUp,
    RecordingBegan,
    RecordingEnded,
    ViewerEnded,
    ViewerQuality,
    ViewerUp,
    session_id,
)
from signaling.gateway.recording import recording_began, recording_ended
from signaling.groups import announce_viewers, group_send
from signaling.http_session_store import HttpSession, SessionKind, session_store
from viewers.models import ViewerSession as ViewerRecord
from viewers.services import viewer_join, viewer_leave
from webhooks.events import webhook_stream_reconnecting

logger = logging.getLogger(__name__)

Work = Coroutine[Any, Any, None]


def react(event: GatewayEvent, *, worker_id: str | None = None) -> list[Work]:
    """The work ``event`` sets off, each piece to run as its own task. ``worker_id``: the
    cluster worker whose gateway reports (its sessions' ids carry it)."""
    work: list[Work] = []
    if isinstance(event, ViewerUp):
        work.append(_whep_viewer_connected(sfu_id=_sfu_id(event.viewer_id, worker_id)))
        if event.notice is not None:
            work.append(_notify(event.notice, "viewer.connected"))
    elif isinstance(event, ViewerEnded):
        work.append(_peer_gone(kind=SessionKind.WHEP, sfu_id=_sfu_id(event.viewer_id, worker_id)))
        if event.notice is not None:
            work.append(_notify(event.notice, "viewer.gone", reason=event.reason))
    elif isinstance(event, ViewerQuality):
        if event.notice is not None:
            work.append(
                _notify(
                    event.notice,
                    "viewer.quality",
                    layer=event.layer,
                    heights=list(event.heights),
                    auto=event.auto,
                    paused=event.paused,
                )
            )
    elif isinstance(event, PublisherUp):
        work.append(group_send(event.stream_id, "publisher.status", status="connected"))
    elif isinstance(event, PublisherDown):
        work.append(group_send(event.stream_id, "publisher.status", status="reconnecting"))
        work.append(_webhook_reconnecting(event.stream_id))
    elif isinstance(event, PublisherEnded):
        work.append(_peer_gone(kind=SessionKind.WHIP, sfu_id=_sfu_id(event.session_id, worker_id)))
        if event.reason == "replaced":
            # Whoever published it (a studio page) hears that it was taken over.
            work.append(
                group_send(event.stream_id, "publisher.replaced", publisher_id=event.session_id)
            )
    elif isinstance(event, BroadcastAbandoned):
        work.append(end_abandoned_broadcast(event.stream_id))
    elif isinstance(event, PosterTaken):
        work.append(_poster_store(event))
    elif isinstance(event, RecordingBegan):
        work.append(
            recording_began(
                recording_id=event.recording_id, path=event.path, container=event.container
            )
        )
    elif isinstance(event, RecordingEnded):
        work.append(recording_ended(event))
    return work


def _sfu_id(local_id: str, worker_id: str | None) -> str:
    return session_id(worker_id, local_id) if worker_id is not None else local_id


async def _notify(notice: ConnectNotice, kind: str, **fields: Any) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.send(notice.channel, {"type": kind, "tag": notice.tag, **fields})


# --- broadcasts ------------------------------------------------------------------------------


@database_sync_to_async
def _end_stream(stream_id: str) -> None:
    stream = Stream.objects.filter(pk=stream_id).first()
    if stream is not None and stream.is_live:
        with contextlib.suppress(ConflictError):  # ended meanwhile by its owner
            stream_end(stream=stream, reason=Stream.EndReason.PUBLISHER_LOST)


async def _poster_store(event: PosterTaken) -> None:
    await database_sync_to_async(stream_poster_set)(stream_id=int(event.stream_id), jpeg=event.jpeg)


async def end_abandoned_broadcast(stream_id: str) -> None:
    logger.info("publisher did not return; ending the broadcast", extra={"stream_id": stream_id})
    await _end_stream(stream_id)


async def _webhook_reconnecting(stream_id: str) -> None:
    await database_sync_to_async(webhook_stream_reconnecting)(stream_id=int(stream_id))


async def origin_lost(stream_id: str) -> None:
    """Cluster mode: the worker holding the stream's publisher died; its viewers hear that
    the publisher is reconnecting."""
    await group_send(stream_id, "publisher.status", status="reconnecting")
    await _webhook_reconnecting(stream_id)


async def worker_gone(stream_id: str, *, worker_id: str, origin: bool) -> None:
    """Cluster mode: a worker holding some of the stream's peers died (``origin``: its
    publisher's); its pages get new sessions on live workers."""
    await group_send(stream_id, "sfu.worker_gone", worker=worker_id, origin=origin)


# --- WHIP/WHEP sessions ----------------------------------------------------------------------


async def _whep_viewer_connected(*, sfu_id: str) -> None:
    session = await session_store.get_peer(kind=SessionKind.WHEP, sfu_id=sfu_id)
    if session is None or session.viewer_record_id is not None:
        return  # a watch page's viewer (its consumer counts it), or gone meanwhile
    try:
        record = await database_sync_to_async(_viewer_join)(session)
    except ConflictError:
        return  # the broadcast ended meanwhile: its router closes this viewer
    session.viewer_record_id = record.pk
    if not await session_store.update(session):
        # DELETEd or gone while it was being counted: whoever popped it saw no record.
        await whep_viewer_leave(session)
        return
    await _announce_viewers(session.stream)


def _viewer_join(session: HttpSession) -> ViewerRecord:
    user = User.objects.filter(pk=session.user_id).first() if session.user_id else None
    return viewer_join(stream=session.stream, kind=ViewerRecord.Kind.WHEP, user=user)


async def _peer_gone(*, kind: SessionKind, sfu_id: str) -> None:
    session = await session_store.end(kind=kind, sfu_id=sfu_id)
    if session is not None:
        await whep_viewer_leave(session)


async def sessions_end_for_worker(*, worker_id: str) -> None:
    """Cluster mode: a dead worker's peers are gone with it; end their sessions as a peer
    going away does (called by the one worker that announces the death)."""
    for session in await session_store.end_worker(worker_id):
        await whep_viewer_leave(session)


async def whep_viewer_leave(session: HttpSession) -> None:
    """Uncount a WHEP viewer whose session ended, if it was counted (connected)."""
    if session.viewer_record_id is not None:
        await database_sync_to_async(_viewer_leave)(record_id=session.viewer_record_id)
        await _announce_viewers(session.stream)


def _viewer_leave(*, record_id: int) -> None:
    record = ViewerRecord.objects.filter(pk=record_id).first()
    if record is not None:
        viewer_leave(session=record)


async def _announce_viewers(stream: Stream) -> None:
    await database_sync_to_async(stream.refresh_from_db)()
    await announce_viewers(stream)
