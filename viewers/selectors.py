from __future__ import annotations

from broadcast.models import Stream
from viewers.models import ViewerSession


def viewer_count(*, stream: Stream) -> int:
    """Viewers watching ``stream`` now, counted from open sessions.

    ``Stream.viewer_count`` is the fast, denormalised copy of this number.
    """
    return ViewerSession.objects.filter(stream=stream, ended_at__isnull=True).count()
