"""Going live and stopping a publisher: one policy for the studio (WebSocket) and WHIP.

``go_live`` answers a broadcaster's offer in the SFU and begins the stream's broadcast (an
ended stream starts a new one), recording it when the stream records (``recording_ensure``).
Publishes to one stream run one after the other in this process, so the last one wins,
every replaced one is told, and the stream's publisher key is the key of the publisher
that holds the broadcast. ``publisher_end`` stops one publisher session, ending the
broadcast only while that session is the stream's publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.db import database_sync_to_async

from broadcast.models import Stream
from broadcast.services import stream_begin, stream_end
from onair.exceptions import ApplicationError, ConflictError
from recordings.models import Recording
from recordings.selectors import recording_may_start
from recordings.services import recording_begin, recording_discard, recording_finish
from signaling.gateway import NO_BROADCAST, PublishResult, gateway, offer_validate
from signaling.groups import announce_media
from signaling.messages import Media

logger = logging.getLogger(__name__)

# By stream id; a lock is tiny, and there is one per stream ever published to here.
_publish_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class Publication:
    """A publish the SFU answered. ``replaced``: a newer publish (or the broadcast's end)
    took its place before its broadcast began, so nothing began; its end was reported."""

    session_id: str
    answer_sdp: str
    replaced: bool


async def go_live(
    *,
    stream: Stream,
    offer_sdp: str,
    key_id: int | None,
    client: str | None,
    hold: Callable[[PublishResult], Awaitable[None]],
    release: Callable[[str], Awaitable[None]],
    media: Media | None = None,
) -> Publication:
    """Publish ``offer_sdp`` into the stream's router, then begin its broadcast.

    ``key_id``: the key that let the publisher in (``None``: the owner's or staff's login);
    revoking it ends the broadcast. ``client``: its address, for the session caps.
    ``hold(result)`` records the new publisher session (a WHIP session, a studio's
    publisher id) before anything else can happen to it, so news of its end finds it.
    ``release(session_id)`` forgets it again when the broadcast cannot begin (the key was
    revoked meanwhile): the session is then stopped by ``publisher_end`` and the
    ``ApplicationError`` raised. ``media``: what the publisher says it sends (the studio's
    offer; a WHIP client sends both unmuted), told to the viewers when it changes.

    A publisher already there (WHIP or studio) is replaced and its viewers carried over:
    at once if it is lost, stalled or not connected, else once the new one is connected
    (see ``sfu.Router``), so a newcomer whose ICE fails leaves a healthy broadcast alone.
    """
    offer_validate(offer_sdp=offer_sdp)
    async with _publish_lock(stream.pk):
        await database_sync_to_async(stream.refresh_from_db)()
        result = await gateway.publish(stream_id=str(stream.pk), offer_sdp=offer_sdp, client=client)
        await hold(result)
        if not await publisher_current(stream=stream, session_id=result.session_id):
            # Replaced before it was held (by a publish through another process) or its
            # router closed: it must not begin the broadcast, nor claim it with its key.
            return Publication(result.session_id, result.answer_sdp, replaced=True)
        media = media or Media()
        before = (stream.mic_muted, stream.camera_off)
        try:
            await database_sync_to_async(stream_begin)(
                stream=stream,
                key_id=key_id,
                mic_muted=media.mic_muted,
                camera_off=media.camera_off,
            )
        except ApplicationError:
            # The key was revoked while the offer was being answered: no broadcast with it.
            await release(result.session_id)
            await publisher_end(
                stream=stream, session_id=result.session_id, reason=Stream.EndReason.KEY_REVOKED
            )
            raise
        if (stream.mic_muted, stream.camera_off) != before:
            await announce_media(stream)
        await recording_ensure(stream=stream)
    return Publication(result.session_id, result.answer_sdp, replaced=False)


async def recording_ensure(*, stream: Stream, switched_on: bool = False) -> None:
    """Record the stream's live broadcast unless its router already does (a publisher
    back within the grace period carries the recording on) or it should not: the stream
    does not record, or this broadcast's recording was stopped on purpose (turned off, a
    limit) and a reconnect must not undo that (``switched_on``: the owner just turned
    recording on again). A recording that cannot start is ``failed`` with the reason; the
    broadcast goes on."""
    stream_id = str(stream.pk)
    try:
        if not stream.record or await gateway.recording_status(stream_id=stream_id) is not None:
            return
    except ApplicationError as exc:  # cluster mode: the origin did not answer
        logger.warning("recording status unknown, not starting one: %s", exc.message)
        return
    recording = await database_sync_to_async(_recording_begin)(stream, switched_on)
    if recording is None:
        return
    try:
        await gateway.recording_start(stream_id=stream_id, recording_id=str(recording.pk))
    except ApplicationError as exc:
        if exc.code == NO_BROADCAST:
            # Turned on while no router holds the broadcast (its publisher has not come
            # back since a restart): its next publish records it.
            await database_sync_to_async(recording_discard)(recording_id=recording.pk)
            return
        logger.warning("recording %s could not start: %s", recording.pk, exc.message)
        await database_sync_to_async(recording_finish)(
            recording_id=recording.pk, reason=Recording.StopReason.FAILED, detail=exc.message
        )


def _recording_begin(stream: Stream, switched_on: bool) -> Recording | None:
    if switched_on or recording_may_start(stream=stream):
        return recording_begin(stream=stream)
    return None


async def recording_switched(*, stream_id: int) -> None:
    """The stream's ``record`` switch changed during its broadcast: record it from now, or
    stop its recording (reason ``stopped``; the broadcast goes on)."""
    stream = await database_sync_to_async(Stream.objects.filter(pk=stream_id).first)()
    if stream is None or not stream.is_live:
        return
    if stream.record:
        await recording_ensure(stream=stream, switched_on=True)
        return
    try:
        await gateway.recording_stop(stream_id=str(stream_id))
    except ApplicationError as exc:  # cluster mode: the origin did not answer
        logger.warning("could not stop the recording of stream %s: %s", stream_id, exc.message)


def _publish_lock(stream_id: int) -> asyncio.Lock:
    """This process's lock on publishing to one stream: a publisher session is held, and its
    broadcast begun, before the next publish can replace it."""
    lock = _publish_locks.get(stream_id)
    if lock is None:
        lock = _publish_locks[stream_id] = asyncio.Lock()
    return lock


async def publisher_current(*, stream: Stream, session_id: str) -> bool:
    """Whether ``session_id`` is still its stream's publisher (connected or within its grace
    period) or about to be (pending until connected), not one a newer publish replaced."""
    state = await gateway.publisher_connection_state(
        stream_id=str(stream.pk), session_id=session_id
    )
    return state is not None


async def publisher_end(*, stream: Stream, session_id: str, reason: Stream.EndReason) -> None:
    """Stop the publisher session ``session_id``. A pending one (its takeover not done) is
    withdrawn and the current publisher carries on; one a newer publish replaced leaves the
    broadcast alone; the stream's publisher ends the broadcast (with ``reason``) and its
    router, so that when this returns the media has stopped."""
    if await gateway.publisher_withdraw(stream_id=str(stream.pk), session_id=session_id):
        return
    if not await publisher_current(stream=stream, session_id=session_id):
        return
    await database_sync_to_async(stream.refresh_from_db)()
    if stream.is_live:
        with contextlib.suppress(ConflictError):  # ended meanwhile
            await database_sync_to_async(stream_end)(stream=stream, reason=reason)
    # stream_end's receiver closes the router too, later: close it now.
    await gateway.close_router(stream_id=str(stream.pk))
