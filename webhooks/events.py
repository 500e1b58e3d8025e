"""Each event's data (the ``data`` of its body, docs/WEBHOOKS.md) and where it is enqueued
from: the transactions that change a stream's state or finish a recording, a new viewer
peak (``webhooks.receivers``), and a broadcaster's connection dropping
(``webhook_stream_reconnecting``, from ``signaling.gateway.reactions``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broadcast.models import Stream
from recordings.models import Recording
from webhooks.models import Event
from webhooks.services import webhook_event_enqueue, webhook_peak_enqueue


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def stream_data(stream: Stream) -> dict[str, Any]:
    return {
        "id": stream.pk,
        "slug": stream.slug,
        "title": stream.title,
        "visibility": stream.visibility,
        "state": stream.state,
        "started_at": _time(stream.started_at),
        "ended_at": _time(stream.ended_at),
        "end_reason": stream.end_reason,
        "viewers": stream.viewer_count,
        "peak_viewers": stream.peak_viewer_count,
    }


def recording_data(recording: Recording) -> dict[str, Any]:
    return {
        "id": str(recording.pk),
        "started_at": _time(recording.started_at),
        "ended_at": _time(recording.ended_at),
        "duration": recording.duration,
        "size": recording.size,
        "container": recording.container,
        "video_codec": recording.video_codec,
        "audio_codec": recording.audio_codec,
        "width": recording.width,
        "height": recording.height,
        "stop_reason": recording.stop_reason,
        "published": recording.published,
    }


def webhook_stream_state(*, stream: Stream) -> int:
    """``stream.live`` or ``stream.ended`` for a stream whose state just changed."""
    event = {Stream.State.LIVE: Event.STREAM_LIVE, Stream.State.ENDED: Event.STREAM_ENDED}.get(
        Stream.State(stream.state)
    )
    if event is None:
        return 0
    return webhook_event_enqueue(
        owner_id=stream.owner_id,
        event=event,
        payload={"stream": stream_data(stream)},
        stream=stream,
    )


def webhook_stream_reconnecting(*, stream_id: int) -> int:
    """``stream.reconnecting``: the live broadcast's publisher dropped (its grace period
    runs; ``stream.ended`` follows unless it comes back)."""
    stream = Stream.objects.filter(pk=stream_id, state=Stream.State.LIVE).first()
    if stream is None:
        return 0
    return webhook_event_enqueue(
        owner_id=stream.owner_id,
        event=Event.STREAM_RECONNECTING,
        payload={"stream": stream_data(stream)},
        stream=stream,
    )


def webhook_recording_ready(*, recording: Recording) -> int:
    stream = recording.stream
    return webhook_event_enqueue(
        owner_id=stream.owner_id,
        event=Event.RECORDING_READY,
        payload={"stream": stream_data(stream), "recording": recording_data(recording)},
        stream=stream,
    )


def webhook_viewer_peak(*, stream: Stream) -> int:
    return webhook_peak_enqueue(
        stream=stream,
        payload={"stream": stream_data(stream), "peak_viewers": stream.peak_viewer_count},
    )
