"""Viewers joining and leaving broadcasts. Each keeps the stream's counters in step."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from broadcast.models import Stream
from broadcast.services import stream_viewer_count_change
from onair.exceptions import ConflictError
from viewers.models import ViewerSession
from viewers.signals import viewer_peak_raised


@transaction.atomic
def viewer_join(
    *,
    stream: Stream,
    kind: str = ViewerSession.Kind.WEB,
    user: User | AnonymousUser | None = None,
) -> ViewerSession:
    """Start a viewer session on a live stream and count the viewer."""
    # Locking the stream row orders joins against stream_end: nobody joins an ended stream.
    locked = Stream.objects.select_for_update().get(pk=stream.pk)
    if not locked.is_live:
        raise ConflictError("This stream is not live.", code="not_live")
    session = ViewerSession.objects.create(
        stream=locked,
        kind=kind,
        user=user if user is not None and user.is_authenticated else None,
    )
    stream_viewer_count_change(stream=stream, delta=1)
    if stream.peak_viewer_count > locked.peak_viewer_count:
        locked.viewer_count, locked.peak_viewer_count = (
            stream.viewer_count,
            stream.peak_viewer_count,
        )
        viewer_peak_raised.send(sender=Stream, stream=locked)
    return session


@transaction.atomic
def viewer_leave(*, session: ViewerSession) -> ViewerSession:
    """End a viewer session. Safe to call twice: only the first call uncounts the viewer."""
    # The stream's row first, as viewer_join and stream_end lock it: in one lock order, a
    # viewer leaving as the broadcast ends cannot deadlock with it (PostgreSQL).
    Stream.objects.select_for_update().filter(pk=session.stream_id).first()
    now = timezone.now()
    closed = ViewerSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(ended_at=now)
    if closed:
        stream_viewer_count_change(stream=session.stream, delta=-1)
    session.refresh_from_db(fields=["ended_at"])
    return session


def viewer_sessions_end(*, stream: Stream) -> int:
    """End every open session of ``stream`` (the broadcast ended); returns how many."""
    return ViewerSession.objects.filter(stream=stream, ended_at__isnull=True).update(
        ended_at=timezone.now()
    )


@transaction.atomic
def viewer_counts_reset() -> int:
    """End every open viewer session and set every stream's current viewer count to zero
    (peaks stay): for a process that starts as the only one counting viewers (embedded
    mode), whatever is still counted was counted by one that died. Returns how many
    sessions it ended."""
    ended = ViewerSession.objects.filter(ended_at__isnull=True).update(ended_at=timezone.now())
    Stream.objects.filter(viewer_count__gt=0).update(viewer_count=0)
    return ended
