"""What every connected page hears when a stream changes, and the media stopping with it.

Consumers, WHIP/WHEP views and the REST API all change streams through
``broadcast.services``; these receivers turn those changes into messages to the stream's
group (``signaling.groups``), so the studio and every viewer see them live, from any
process, and stop the media of a broadcast that ended.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from django.dispatch import receiver

from broadcast.models import Stream, StreamKey
from broadcast.signals import stream_key_revoked, stream_record_changed, stream_state_changed
from recordings.models import Recording
from recordings.signals import recording_state_changed
from signaling.gateway import gateway
from signaling.groups import announce_recording, announce_state, group_send
from signaling.publishing import recording_switched


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
        gateway.close_router_soon(stream_id=str(stream_id))
    async_to_sync(announce_state)(stream)


@receiver(stream_key_revoked, sender=StreamKey, dispatch_uid="signaling-key-revoked")
def _key_revoked(sender: type[StreamKey], stream: Stream, key: StreamKey, **kwargs: Any) -> None:
    # Every studio the key let in, in any process, closes (the broadcast itself, if the key
    # let its publisher in, was ended by the service; WHIP sessions check their key).
    key_id = key.pk
    stream_id = stream.pk
    transaction.on_commit(
        lambda: async_to_sync(group_send)(stream_id, "stream.key_revoked", key_id=key_id)
    )


@receiver(recording_state_changed, sender=Recording, dispatch_uid="signaling-recording-state")
def _recording_changed(sender: type[Recording], recording: Recording, **kwargs: Any) -> None:
    # The studio shows "● REC" and the reason a recording stopped, from any process.
    transaction.on_commit(lambda: async_to_sync(announce_recording)(recording))


@receiver(stream_record_changed, sender=Stream, dispatch_uid="signaling-record-changed")
def _record_changed(sender: type[Stream], stream: Stream, **kwargs: Any) -> None:
    # Turned on or off during a broadcast (My streams, the API, the admin): at once.
    if stream.is_live:
        stream_id = stream.pk
        transaction.on_commit(lambda: async_to_sync(recording_switched)(stream_id=stream_id))
