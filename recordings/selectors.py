"""Reads of recordings, with who may see what in one place.

A stream's owner and staff see all of its recordings. Anyone else sees only the ``ready``
recordings its owner published, and only while the stream is public; any other recording
is "not found" to them, exactly as one that does not exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet

from broadcast.models import Stream
from broadcast.selectors import AnyUser, stream_is_managed_by
from onair.exceptions import NotFoundError
from recordings.models import Recording

# Stops after which a reconnecting publisher does not start the broadcast's recording again.
_DELIBERATE_STOPS = (
    Recording.StopReason.STOPPED,
    Recording.StopReason.SIZE_LIMIT,
    Recording.StopReason.DURATION_LIMIT,
    Recording.StopReason.DISK_FULL,
)


def _public() -> Q:
    return Q(
        state=Recording.State.READY,
        published=True,
        stream__visibility=Stream.Visibility.PUBLIC,
    )


def _is_public(recording: Recording) -> bool:
    return (
        recording.state == Recording.State.READY
        and recording.published
        and recording.stream.visibility == Stream.Visibility.PUBLIC
    )


def recording_is_managed_by(*, recording: Recording, user: AnyUser) -> bool:
    """``user`` may manage ``recording`` (delete, publish): its stream's owner, or staff."""
    return stream_is_managed_by(stream=recording.stream, user=user)


def recording_list(*, stream: Stream, user: AnyUser) -> QuerySet[Recording]:
    """The stream's recordings ``user`` may see, newest first."""
    recordings = Recording.objects.select_related("stream__owner").filter(stream=stream)
    if stream_is_managed_by(stream=stream, user=user):
        return recordings
    return recordings.filter(_public())


def recording_get(*, recording_id: str | uuid.UUID, user: AnyUser) -> Recording:
    """A recording ``user`` may see; anything else raises ``NotFoundError``."""
    try:
        key = recording_id if isinstance(recording_id, uuid.UUID) else uuid.UUID(recording_id)
    except ValueError:
        raise NotFoundError("No such recording.") from None
    recording = Recording.objects.select_related("stream__owner").filter(pk=key).first()
    if recording is None or not (
        _is_public(recording) or recording_is_managed_by(recording=recording, user=user)
    ):
        raise NotFoundError("No such recording.")
    return recording


def recording_active(*, stream: Stream) -> Recording | None:
    """The stream's recording that is being written, if any (the newest)."""
    return Recording.objects.filter(stream=stream, state=Recording.State.RECORDING).first()


def recording_may_start(*, stream: Stream) -> bool:
    """Whether a publisher of the stream's live broadcast starts a recording: the stream
    records, and no recording of this broadcast was stopped on purpose (turned off, or a
    size, duration or disk limit reached), which a reconnecting publisher must not undo."""
    if not stream.record or stream.started_at is None:
        return False
    return not Recording.objects.filter(
        stream=stream, started_at__gte=stream.started_at, stop_reason__in=_DELIBERATE_STOPS
    ).exists()


def recording_list_unfinished(*, host: str | None = None) -> QuerySet[Recording]:
    """Recordings still marked ``recording`` (written on ``host``, when given): left by a
    process that died, unless their router still runs."""
    recordings = Recording.objects.filter(state=Recording.State.RECORDING)
    if host is not None:
        recordings = recordings.filter(host=host)
    return recordings


def recording_list_expired(*, now: datetime, days: float) -> QuerySet[Recording]:
    """Finished recordings that started more than ``days`` days before ``now``."""
    return Recording.objects.exclude(state=Recording.State.RECORDING).filter(
        started_at__lt=now - timedelta(days=days)
    )
