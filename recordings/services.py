"""Writes to recordings. Signaling (a broadcast going live, the SFU's reports), the REST
API, the admin and the retention command call these."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from broadcast.models import Stream
from broadcast.selectors import AnyUser
from onair.conf import onair_settings
from onair.exceptions import ConflictError, PermissionDeniedError
from recordings.models import Recording
from recordings.selectors import recording_is_managed_by, recording_list_expired
from recordings.signals import recording_state_changed
from recordings.storage import spool_file_store

logger = logging.getLogger("onair.recordings")


@dataclass(frozen=True)
class RecordingFile:
    """What a finished recording's file holds, as read from the file itself."""

    container: str
    duration: float
    size: int
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    video_frames: int


def _changed(recording: Recording) -> None:
    recording_state_changed.send(sender=Recording, recording=recording)


@transaction.atomic
def recording_begin(*, stream: Stream) -> Recording:
    """A new recording of the stream's broadcast, ``recording`` from now. It is published
    (anyone may watch it once ready) if the stream is public now."""
    recording = Recording.objects.create(
        stream=stream,
        started_at=timezone.now(),
        published=stream.visibility == Stream.Visibility.PUBLIC,
    )
    logger.info("recording_begin stream=%s recording=%s", stream.slug, recording.pk)
    _changed(recording)
    return recording


def recording_assigned(*, recording_id: str, host: str, worker: str) -> None:
    """The SFU on ``host`` (the cluster ``worker``; ``""`` in embedded mode) records it: who
    finishes it if that process dies."""
    Recording.objects.filter(pk=recording_id, state=Recording.State.RECORDING).update(
        host=host, worker=worker
    )


def recording_started(*, recording_id: str, spool_path: str, container: str) -> None:
    """The SFU opened the recording's file: where it is (to finish it after a crash)."""
    Recording.objects.filter(pk=recording_id, state=Recording.State.RECORDING).update(
        spool_path=spool_path, container=container
    )


def recording_claim(*, recording_id: str, held_by: str, claimant: str) -> bool:
    """Cluster mode: the worker ``claimant`` takes over a recording the dead worker
    ``held_by`` was writing, to finish it; False if another one did first (or it is
    finished)."""
    taken = Recording.objects.filter(
        pk=recording_id, state=Recording.State.RECORDING, worker=held_by
    ).update(worker=claimant)
    return taken == 1


def recording_store(*, recording_id: str, spool_path: Path) -> str:
    """Move a finished spool file into the recordings' storage; the name it is stored
    under. No database access: callers run it in a thread of its own (a remote storage
    may take minutes)."""
    return spool_file_store(path=spool_path, name=f"{recording_id}{spool_path.suffix}")


@transaction.atomic
def recording_finish(
    *,
    recording_id: str | uuid.UUID,
    reason: str,
    detail: str = "",
    file: RecordingFile | None = None,
    file_name: str = "",
) -> Recording | None:
    """The recording stopped (``reason``, a ``Recording.StopReason`` value; ``detail``: a
    sentence for people). With its ``file`` stored as ``file_name`` it is ``ready``;
    without, ``failed``. ``None`` if it was finished already or deleted meanwhile (the
    caller then owns ``file_name``)."""
    recording = (
        Recording.objects.select_for_update()
        .filter(pk=recording_id, state=Recording.State.RECORDING)
        .first()
    )
    if recording is None:
        return None
    if reason not in Recording.StopReason.values:
        detail = detail or f"Stopped: {reason}."
        reason = Recording.StopReason.FAILED
    recording.stop_reason = reason
    recording.detail = detail[:500]
    recording.ended_at = timezone.now()
    recording.spool_path = ""
    if file is not None and file_name:
        recording.state = Recording.State.READY
        recording.file.name = file_name
        recording.container = file.container
        recording.duration = file.duration
        recording.size = file.size
        recording.video_codec = file.video_codec or ""
        recording.audio_codec = file.audio_codec or ""
        recording.width = file.width
        recording.height = file.height
        recording.video_frames = file.video_frames
    else:
        recording.state = Recording.State.FAILED
        recording.detail = recording.detail or "Nothing playable was recorded."
    recording.save()
    logger.info(
        "recording_finish recording=%s state=%s reason=%s duration=%.1f size=%d",
        recording.pk,
        recording.state,
        reason,
        recording.duration,
        recording.size,
    )
    _changed(recording)
    return recording


def recording_discard(*, recording_id: str | uuid.UUID) -> None:
    """Forget a recording that never started (its broadcast had no media server to record
    it yet): nothing was written, so nothing is kept."""
    with transaction.atomic():
        Recording.objects.filter(pk=recording_id, state=Recording.State.RECORDING).delete()


def _check_manages(*, recording: Recording, user: AnyUser) -> None:
    if not recording_is_managed_by(recording=recording, user=user):
        raise PermissionDeniedError("Only the stream's owner can change its recordings.")


@transaction.atomic
def recording_delete(*, recording: Recording, user: AnyUser) -> None:
    """Delete a finished recording and its file (the stream's owner, or staff)."""
    _check_manages(recording=recording, user=user)
    if recording.state == Recording.State.RECORDING:
        raise ConflictError(
            "This recording is still being written; delete it once it has finished.",
            code="recording_running",
        )
    recording.delete()  # its files go once this commits (recordings.receivers)


def recording_set_published(*, recording: Recording, user: AnyUser, published: bool) -> Recording:
    """Let anyone watch the recording while its stream is public (``published``), or only
    the stream's owner and staff."""
    _check_manages(recording=recording, user=user)
    recording.published = published
    recording.save(update_fields=["published"])
    return recording


def recordings_expire(*, now: datetime | None = None) -> int:
    """Delete the finished recordings older than ``ONAIR_RECORDING_RETENTION_DAYS`` (none
    when it is 0), with their files; how many."""
    days = onair_settings().recording.retention_days
    if not days:
        return 0
    expired = recording_list_expired(now=now or timezone.now(), days=days)
    deleted = 0
    for recording in expired.iterator():
        with transaction.atomic():
            recording.delete()
        deleted += 1
    if deleted:
        logger.info("recordings_expire deleted=%d older_than_days=%s", deleted, days)
    return deleted
