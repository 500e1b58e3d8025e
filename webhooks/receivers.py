"""Events enqueued in the transaction that made them happen (``webhooks.events``)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from broadcast.models import Stream
from broadcast.signals import stream_state_changed
from recordings.models import Recording
from recordings.signals import recording_state_changed
from viewers.signals import viewer_peak_raised
from webhooks.events import webhook_recording_ready, webhook_stream_state, webhook_viewer_peak


@receiver(stream_state_changed, sender=Stream, dispatch_uid="webhooks-stream-state")
def _stream_state(sender: type[Stream], stream: Stream, **kwargs: Any) -> None:
    webhook_stream_state(stream=stream)


@receiver(recording_state_changed, sender=Recording, dispatch_uid="webhooks-recording-ready")
def _recording_state(sender: type[Recording], recording: Recording, **kwargs: Any) -> None:
    if recording.state == Recording.State.READY:
        webhook_recording_ready(recording=recording)


@receiver(viewer_peak_raised, sender=Stream, dispatch_uid="webhooks-viewer-peak")
def _viewer_peak(sender: type[Stream], stream: Stream, **kwargs: Any) -> None:
    webhook_viewer_peak(stream=stream)
