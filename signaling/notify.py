"""What every connected page hears about a stream: its state and its viewer count.

Consumers, WHIP/WHEP views and the REST API all change streams through
``broadcast.services``; this module turns those changes into channel-layer messages for
the stream's group, so the studio and every viewer see them live, from any process.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.dispatch import receiver

from broadcast.models import Stream, StreamKey
from broadcast.signals import stream_key_revoked, stream_state_changed
from signaling.sfu_gateway import gateway, stream_group


def stream_payload(stream: Stream) -> dict[str, Any]:
    """The ``stream`` object of the signaling messages (docs/SIGNALING.md)."""
    return {
        "slug": stream.slug,
        "title": stream.title,
        "state": stream.state,
        "viewers": stream.viewer_count,
        "peak_viewers": stream.peak_viewer_count,
        "started_at": stream.started_at.isoformat() if stream.started_at else None,
        "ended_at": stream.ended_at.isoformat() if stream.ended_at else None,
        "end_reason": stream.end_reason,
    }


async def announce_state(stream: Stream) -> None:
    await _send(stream.pk, {"type": "stream.state", "stream": stream_payload(stream)})


async def announce_viewers(stream: Stream) -> None:
    await _send(
        stream.pk,
        {"type": "stream.viewers", "count": stream.viewer_count, "peak": stream.peak_viewer_count},
    )


async def _send(stream_id: int, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(stream_group(stream_id), message)


@receiver(stream_state_changed, sender=Stream, dispatch_uid="signaling-announce-state")
def _state_changed(sender: type[Stream], stream: Stream, **kwargs: Any) -> None:
    stream_id = stream.pk
    transaction.on_commit(lambda: _after_state_commit(stream_id))


def _after_state_commit(stream_id: int) -> None:
    stream = Stream.objects.filter(pk=stream_id).first()
    if stream is None:
        return
    if stream.state == Stream.State.ENDED:
        # Ended from anywhere (studio, REST API, admin, grace timeout): stop the media too.
        gateway.close_router_soon(stream_id=stream_id)
    async_to_sync(announce_state)(stream)


@receiver(stream_key_revoked, sender=StreamKey, dispatch_uid="signaling-key-revoked")
def _key_revoked(sender: type[StreamKey], stream: Stream, key: StreamKey, **kwargs: Any) -> None:
    # Every studio the key let in, in any process, closes (the broadcast itself, if the key
    # let its publisher in, was ended by the service; WHIP sessions check their key).
    message = {"type": "stream.key_revoked", "key_id": key.pk}
    stream_id = stream.pk
    transaction.on_commit(lambda: async_to_sync(_send)(stream_id, message))
