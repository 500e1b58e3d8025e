"""``{% load replay %}``: the "Past broadcasts" section of a stream's pages, and durations."""

from __future__ import annotations

from typing import Any

from django import template
from django.template.context import RequestContext
from django.utils.html import json_script
from django.utils.safestring import SafeString

from broadcast.models import Stream
from broadcast.selectors import stream_is_managed_by
from recordings import selectors
from recordings.models import Recording
from recordings.views import PAST_BROADCASTS_SHOWN, playable

register = template.Library()


@register.inclusion_tag("recordings/past_broadcasts.html", takes_context=True)
def past_broadcasts(
    context: RequestContext, stream: Stream, *, shown: bool = True
) -> dict[str, Any]:
    """The stream's recordings the page's user may play; ``shown=False`` renders the section
    hidden (the watch page shows it once the stream is not live)."""
    recordings = playable(stream=stream, user=context["request"].user)[:PAST_BROADCASTS_SHOWN]
    return {"stream": stream, "recordings": list(recordings), "shown": shown}


@register.filter
def hms(seconds: float | None) -> str:
    """1:02:03 for 3723 seconds, 2:03 for 123 (a player's way)."""
    total = int(seconds or 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# Stops the studio need not explain: the broadcast ended, or the owner turned recording off.
_EXPECTED_STOPS = {Recording.StopReason.ENDED, Recording.StopReason.STOPPED}


@register.simple_tag(takes_context=True)
def studio_recording(context: RequestContext, stream: Stream) -> SafeString:
    """The studio's server recording: whether the stream records, the recording running now
    (the studio shows "● REC" and its time from the start), the stop reasons' wording, and
    why this live broadcast's recording stopped early, if it did. Someone broadcasting with the
    stream's key learns them from the signaling once their key is accepted."""
    manages = stream_is_managed_by(stream=stream, user=context["request"].user)
    active = selectors.recording_active(stream=stream) if manages else None
    stopped = None
    if manages and active is None and stream.state == Stream.State.LIVE and stream.started_at:
        last = (
            selectors.recording_list(stream=stream, user=context["request"].user)
            .filter(started_at__gte=stream.started_at)
            .first()
        )
        if last is not None and (
            last.state == Recording.State.FAILED or last.stop_reason not in _EXPECTED_STOPS
        ):
            stopped = {"state": last.state, "reason": last.stop_reason, "detail": last.detail}
    config = {
        "record": stream.record if manages else None,
        "active": {"id": str(active.pk), "started_at": active.started_at.isoformat()}
        if active
        else None,
        "stop_reasons": dict(Recording.StopReason.choices),
        "stopped": stopped,
    }
    return json_script(config, "onair-recording")


@register.inclusion_tag("recordings/stream_recording_state.html", takes_context=True)
def stream_recording_state(context: RequestContext, stream: Stream) -> dict[str, Any]:
    """My streams' recording cell: the record switch, and the recording running now or the
    last one, whatever its state (the owner sees them all)."""
    last = selectors.recording_list(stream=stream, user=context["request"].user).first()
    active = last if last is not None and last.state == Recording.State.RECORDING else None
    return {"stream": stream, "active": active, "last": last}
