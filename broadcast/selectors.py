"""Reads of streams and stream keys, with the visibility rules in one place."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from broadcast.models import Stream, StreamKey
from broadcast.storage import thumbnail_storage
from onair.exceptions import NotFoundError

AnyUser = User | AnonymousUser


def _is_staff(user: AnyUser) -> bool:
    return bool(user.is_authenticated and getattr(user, "is_staff", False))


def stream_is_managed_by(*, stream: Stream, user: AnyUser) -> bool:
    """``user`` may manage ``stream``: its owner or staff (``stream_list`` is this rule as a
    query). Managing covers broadcasting from the studio, watching it while private, and the
    stream's settings and keys."""
    return bool(user.is_authenticated and (_is_staff(user) or stream.owner_id == user.pk))


def stream_list(
    *,
    user: AnyUser,
    state: str | None = None,
    visibility: str | None = None,
    owned_only: bool = False,
) -> QuerySet[Stream]:
    """Streams ``user`` manages: their own, or every stream for staff (unless ``owned_only``)."""
    streams = Stream.objects.select_related("owner").prefetch_related("keys")
    if not user.is_authenticated:
        return streams.none()
    if owned_only or not _is_staff(user):
        streams = streams.filter(owner_id=user.pk)
    if state:
        streams = streams.filter(state=state)
    if visibility:
        streams = streams.filter(visibility=visibility)
    return streams


def stream_list_live(*, user: AnyUser) -> QuerySet[Stream]:
    """Live streams anyone can discover: public ones, plus the user's own of any visibility."""
    listed = Q(visibility=Stream.Visibility.PUBLIC)
    if user.is_authenticated:
        listed |= Q(owner_id=user.pk)
    return (
        Stream.objects.select_related("owner")
        .filter(listed, state=Stream.State.LIVE)
        .order_by("-viewer_count", "-started_at", "-id")
    )


def stream_get_managed(*, slug: str, user: AnyUser) -> Stream:
    """A stream ``user`` may manage. Other people's streams are "not found", not
    "forbidden", so private streams are not revealed.
    """
    stream = stream_list(user=user).filter(slug=slug).first()
    if stream is None:
        raise NotFoundError("No such stream.")
    return stream


def stream_get_visible(*, slug: str, user: AnyUser) -> Stream:
    """A stream ``user`` may watch: public and unlisted ones by address; private ones only
    for their owner and staff.
    """
    stream = Stream.objects.select_related("owner").filter(slug=slug).first()
    if stream is None or (
        stream.visibility == Stream.Visibility.PRIVATE
        and not stream_is_managed_by(stream=stream, user=user)
    ):
        raise NotFoundError("No such stream.")
    return stream


def stream_get_by_key(*, secret: str) -> Stream:
    """The stream whose active key is ``secret`` (for clients that send only a key)."""
    digest = StreamKey.digest_of(secret)
    key = (
        StreamKey.objects.select_related("stream")
        .filter(digest=digest, revoked_at__isnull=True)
        .first()
    )
    if key is None:
        raise NotFoundError("No stream has this key.")
    return key.stream


def stream_key_active(*, stream: Stream) -> StreamKey | None:
    return StreamKey.objects.filter(stream=stream, revoked_at__isnull=True).first()


def stream_key_is_active(*, key_id: int) -> bool:
    return StreamKey.objects.filter(pk=key_id, revoked_at__isnull=True).exists()


def stream_ids_live() -> list[int]:
    """The ids of every live stream (whoever can see them)."""
    return list(Stream.objects.filter(state=Stream.State.LIVE).values_list("pk", flat=True))


def stream_poster_read(*, stream: Stream) -> bytes:
    """The JPEG of ``stream``'s latest poster; ``NotFoundError`` if it has none (none taken
    yet, or its file is gone)."""
    if not stream.poster:
        raise NotFoundError("This stream has no poster.")
    try:
        with thumbnail_storage().open(stream.poster, "rb") as poster:
            data = poster.read()
    except OSError as exc:
        raise NotFoundError("This stream has no poster.") from exc
    return bytes(data)
