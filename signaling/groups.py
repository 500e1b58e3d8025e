"""Messages to every page connected to a stream, through its channel-layer group.

The studio and watch pages of a stream, in any process, are members of its group; these
messages reach each of them as a consumer method (``stream.state`` → ``stream_state``).
"""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer

from broadcast.models import Stream
from recordings.models import Recording


def stream_group(stream_id: int | str) -> str:
    """The channel-layer group of everyone connected to one stream."""
    return f"stream.{stream_id}"


async def group_send(stream_id: int | str, kind: str, **fields: Any) -> None:
    """Send a ``kind`` message to the stream's group (nothing without a channel layer)."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(stream_group(stream_id), {"type": kind, **fields})


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
        "media": media_payload(stream),
    }


def media_payload(stream: Stream) -> dict[str, bool]:
    """What the broadcaster sends (the ``media`` message, and the ``stream`` object's)."""
    return {"mic_muted": stream.mic_muted, "camera_off": stream.camera_off}


async def announce_media(stream: Stream) -> None:
    await group_send(stream.pk, "stream.media", media=media_payload(stream))


async def announce_state(stream: Stream) -> None:
    await group_send(stream.pk, "stream.state", stream=stream_payload(stream))


async def announce_viewers(stream: Stream) -> None:
    await group_send(
        stream.pk, "stream.viewers", count=stream.viewer_count, peak=stream.peak_viewer_count
    )


def recording_payload(recording: Recording) -> dict[str, Any]:
    """The ``recording`` object of the studio's signaling messages (docs/SIGNALING.md)."""
    return {
        "id": str(recording.pk),
        "state": recording.state,
        "started_at": recording.started_at.isoformat(),
        "ended_at": recording.ended_at.isoformat() if recording.ended_at else None,
        "duration": recording.duration,
        "reason": recording.stop_reason,
        "detail": recording.detail,
    }


async def announce_recording(recording: Recording) -> None:
    await group_send(recording.stream_id, "recording.state", recording=recording_payload(recording))
