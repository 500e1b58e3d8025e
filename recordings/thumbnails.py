"""A recording's thumbnail: the last poster of its stream (``broadcast.services.
stream_poster_set``) taken while it recorded, copied next to its file when it is ready."""

from __future__ import annotations

import logging
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.dispatch import receiver

from broadcast.selectors import stream_poster_read
from onair.exceptions import NotFoundError
from recordings.models import Recording
from recordings.signals import recording_state_changed
from recordings.storage import recording_storage

logger = logging.getLogger("onair.recordings")


@receiver(recording_state_changed, dispatch_uid="recordings-thumbnail")
def _on_state_changed(sender: type[Recording], recording: Recording, **kwargs: Any) -> None:
    if recording.state == Recording.State.READY and not recording.thumbnail:
        # Once the recording is ready for good: a rolled-back finish copies nothing.
        recording_id = recording.pk
        transaction.on_commit(lambda: recording_thumbnail_from_poster(recording_id=recording_id))


def recording_thumbnail_from_poster(*, recording_id: Any) -> None:
    """Copy the poster its stream had when the recording ended, if it was taken while it
    recorded, as the recording's thumbnail (unless it has one)."""
    recording = Recording.objects.select_related("stream").filter(pk=recording_id).first()
    if recording is None or recording.thumbnail:
        return
    stream = recording.stream
    taken = stream.poster_taken_at
    ended = recording.ended_at
    if taken is None or taken < recording.started_at or (ended is not None and taken > ended):
        return  # no poster while it recorded (or one of a later broadcast)
    try:
        jpeg = stream_poster_read(stream=stream)
    except NotFoundError:
        return
    name = recording_storage().save(f"{recording.pk}.jpg", ContentFile(jpeg))
    if not Recording.objects.filter(pk=recording.pk, thumbnail="").update(thumbnail=name):
        recording_storage().delete(name)  # deleted, or given one, meanwhile
        return
    logger.info("recording_thumbnail recording=%s", recording.pk)
