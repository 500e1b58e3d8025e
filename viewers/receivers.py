from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from broadcast.models import Stream
from broadcast.signals import stream_state_changed
from viewers.services import viewer_sessions_end


@receiver(stream_state_changed, sender=Stream, dispatch_uid="viewers-end-sessions")
def end_sessions_when_stream_ends(sender: type[Stream], stream: Stream, **kwargs: Any) -> None:
    if stream.state == Stream.State.ENDED:
        viewer_sessions_end(stream=stream)
