"""Writes to streams and stream keys. Views, admin, commands and consumers call these."""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.text import slugify

from broadcast.models import Stream, StreamKey
from broadcast.signals import stream_key_revoked, stream_record_changed, stream_state_changed
from broadcast.storage import thumbnail_storage
from onair.conf import onair_settings
from onair.exceptions import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    PermissionDeniedError,
)

logger = logging.getLogger("onair.broadcast")

KEY_SECRET_PREFIX = "sk_"
KEY_SECRET_MIN_LENGTH = 32
_KEY_DISPLAY_LENGTH = 8
_SLUG_MAX_LENGTH = 50
_KEY_REVOKED_MESSAGE = "The stream key was revoked or replaced; publish with the new key."


@dataclass(frozen=True)
class IssuedKey:
    """A new key and its secret. The secret exists only here: show it once, then drop it."""

    key: StreamKey
    secret: str


def _slug_available(slug: str) -> bool:
    return not Stream.objects.filter(slug=slug).exists()


def _slug_for_title(title: str) -> str:
    base = slugify(title)[:_SLUG_MAX_LENGTH].strip("-") or "stream"
    slug = base
    while not _slug_available(slug):
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def _key_issue(*, stream: Stream, secret: str | None = None) -> IssuedKey:
    secret = secret or f"{KEY_SECRET_PREFIX}{secrets.token_urlsafe(32)}"
    if len(secret) < KEY_SECRET_MIN_LENGTH:
        raise InvalidInputError(
            "A stream key must be long enough to be unguessable.",
            fields={"secret": [f"Use at least {KEY_SECRET_MIN_LENGTH} characters."]},
        )
    key = StreamKey.objects.create(
        stream=stream, digest=StreamKey.digest_of(secret), prefix=secret[:_KEY_DISPLAY_LENGTH]
    )
    return IssuedKey(key=key, secret=secret)


def _stream_locked(stream: Stream) -> Stream:
    """The stream's row, locked until the end of the current transaction."""
    return Stream.objects.select_for_update().get(pk=stream.pk)


def _stream_set_state(*, stream: Stream, locked: Stream, previous: str) -> Stream:
    locked.save()
    logger.info("stream_state slug=%s from=%s to=%s", locked.slug, previous, locked.state)
    stream_state_changed.send(sender=Stream, stream=locked, previous=previous)
    stream.refresh_from_db()
    return stream


def _stream_quota_check(*, owner: User) -> None:
    limit = onair_settings().max_streams_per_user
    if owner.is_staff or not limit:
        return
    # The owner's row lock serializes concurrent creates by one owner (and their count).
    User.objects.select_for_update().filter(pk=owner.pk).first()
    if Stream.objects.filter(owner=owner).count() >= limit:
        raise PermissionDeniedError(
            f"This account has reached its quota of {limit} streams (the most an account may "
            "own); delete one to create another.",
            code="stream_quota",
        )


@transaction.atomic
def stream_create(
    *,
    owner: User,
    title: str,
    description: str = "",
    visibility: str = Stream.Visibility.PUBLIC,
    slug: str | None = None,
    key_secret: str | None = None,
    record: bool | None = None,
) -> tuple[Stream, IssuedKey]:
    """A new idle stream and its first key (whose secret is returned only now).

    ``record``: record its broadcasts (``None``: ``ONAIR_RECORD_BY_DEFAULT``).
    ``key_secret`` as for ``stream_key_rotate``. An owner who is not staff may hold at most
    ``ONAIR["MAX_STREAMS_PER_USER"]`` streams (``stream_quota``).
    """
    _stream_quota_check(owner=owner)
    if slug is not None and not _slug_available(slug):
        raise InvalidInputError(
            "That address is taken.", fields={"slug": ["A stream with this slug already exists."]}
        )
    try:
        with transaction.atomic():
            stream = Stream.objects.create(
                owner=owner,
                title=title,
                description=description,
                visibility=visibility,
                slug=slug or _slug_for_title(title),
                **({} if record is None else {"record": record}),
            )
    except IntegrityError as error:  # lost a race for the same slug
        raise InvalidInputError(
            "That address is taken.", fields={"slug": ["A stream with this slug already exists."]}
        ) from error
    return stream, _key_issue(stream=stream, secret=key_secret)


def stream_update(
    *,
    stream: Stream,
    title: str | None = None,
    description: str | None = None,
    visibility: str | None = None,
    record: bool | None = None,
) -> Stream:
    """Change the given fields; ``None`` leaves a field as it is. Changing ``record`` during
    a broadcast starts or stops its recording (``stream_record_changed``)."""
    changes = {
        name: value
        for name, value in (
            ("title", title),
            ("description", description),
            ("visibility", visibility),
            ("record", record),
        )
        if value is not None
    }
    if not changes:
        return stream
    record_changed = "record" in changes and changes["record"] != stream.record
    for name, value in changes.items():
        setattr(stream, name, value)
    stream.save(update_fields=[*changes, "updated_at"])
    if record_changed:
        stream_record_changed.send(sender=Stream, stream=stream)
    return stream


@transaction.atomic
def stream_delete(*, stream: Stream) -> None:
    """Delete a stream that is not on air, with its keys and viewer history."""
    if _stream_locked(stream).is_live:
        raise ConflictError(
            "This stream is live: end the broadcast before deleting it.", code="stream_live"
        )
    poster = stream.poster
    stream.delete()
    if poster:
        transaction.on_commit(lambda: _poster_file_delete(poster))


@transaction.atomic
def stream_go_live(*, stream: Stream) -> Stream:
    """idle → live, or ended → live as a new broadcast (as ``stream_restart`` then this)."""
    locked = _stream_locked(stream)
    if locked.state == Stream.State.LIVE:
        raise ConflictError("The stream is already live.", code="already_live")
    if locked.state == Stream.State.ENDED:
        stream_restart(stream=stream)
    locked = _stream_locked(stream)
    locked.state = Stream.State.LIVE
    locked.started_at = timezone.now()
    locked.ended_at = None
    locked.end_reason = ""
    return _stream_set_state(stream=stream, locked=locked, previous=Stream.State.IDLE)


@transaction.atomic
def stream_end(*, stream: Stream, reason: Stream.EndReason) -> Stream:
    """live → ended. Viewers are dropped; the peak viewer count stays. ``reason`` (who or
    what ended it) is kept on the stream and shown to the studio and the viewers."""
    locked = _stream_locked(stream)
    if locked.state != Stream.State.LIVE:
        raise ConflictError(
            f"Only a live stream can end; this one is {locked.state}.", code="not_live"
        )
    locked.state = Stream.State.ENDED
    locked.ended_at = timezone.now()
    locked.end_reason = reason
    locked.viewer_count = 0
    locked.publisher_key = None
    return _stream_set_state(stream=stream, locked=locked, previous=Stream.State.LIVE)


@transaction.atomic
def stream_restart(*, stream: Stream) -> Stream:
    """ended → idle: ready for a new broadcast with the same address and key."""
    locked = _stream_locked(stream)
    if locked.state != Stream.State.ENDED:
        raise ConflictError(
            f"Only an ended stream can be restarted; this one is {locked.state}.",
            code="not_ended",
        )
    locked.state = Stream.State.IDLE
    locked.started_at = None
    locked.ended_at = None
    locked.end_reason = ""
    locked.viewer_count = 0
    locked.peak_viewer_count = 0
    return _stream_set_state(stream=stream, locked=locked, previous=Stream.State.ENDED)


@transaction.atomic
def stream_begin(
    *,
    stream: Stream,
    key_id: int | None = None,
    mic_muted: bool = False,
    camera_off: bool = False,
) -> Stream:
    """A publisher started sending: idle → live, or ended → live as a new broadcast (what a
    broadcaster pressing "Start streaming" in OBS again expects). Already live: unchanged.

    ``key_id``: the key that let the publisher in (``None``: the owner's login). Revoking
    that key ends the broadcast; a key revoked meanwhile is refused (``key_revoked``).
    ``mic_muted``, ``camera_off``: what the new publisher says it sends (``stream_media_set``).
    """
    locked = _stream_locked(stream)
    if (
        key_id is not None
        and not StreamKey.objects.filter(pk=key_id, stream=stream, revoked_at__isnull=True).exists()
    ):
        raise NotAuthenticatedError(_KEY_REVOKED_MESSAGE, code="key_revoked")
    Stream.objects.filter(pk=stream.pk).update(
        publisher_key_id=key_id, mic_muted=mic_muted, camera_off=camera_off
    )
    stream.publisher_key_id = key_id
    stream.mic_muted, stream.camera_off = mic_muted, camera_off
    if locked.state == Stream.State.LIVE:
        return stream
    return stream_go_live(stream=stream)


def _keys_revoke(*, stream: Stream, keys: list[StreamKey]) -> None:
    """Revoke ``keys`` (the stream is locked): every session they authorized ends. A
    broadcast whose publisher came in with one of them ends here; studios and WHIP sessions
    hear it through ``stream_key_revoked`` once the transaction commits."""
    now = timezone.now()
    for key in keys:
        key.revoked_at = now
        key.save(update_fields=["revoked_at"])
        stream_key_revoked.send(sender=StreamKey, stream=stream, key=key)
    locked = Stream.objects.get(pk=stream.pk)
    if locked.is_live and locked.publisher_key_id in {key.pk for key in keys}:
        logger.info("stream_key_revoked slug=%s: ending its broadcast", stream.slug)
        stream_end(stream=stream, reason=Stream.EndReason.KEY_REVOKED)


@transaction.atomic
def stream_key_rotate(*, stream: Stream, secret: str | None = None) -> IssuedKey:
    """Revoke the active key (if any), ending the sessions it authorized, and issue a new
    one.

    ``secret`` supplies the new key's secret instead of a random one (the demo command
    uses a key derived from ``SECRET_KEY``); it must be at least 32 characters.
    """
    _stream_locked(stream)
    _keys_revoke(
        stream=stream,
        keys=list(StreamKey.objects.filter(stream=stream, revoked_at__isnull=True)),
    )
    return _key_issue(stream=stream, secret=secret)


@transaction.atomic
def stream_key_revoke(*, stream: Stream) -> StreamKey:
    """Revoke the active key: nobody can publish until a new key is issued, and every
    session it authorized ends."""
    _stream_locked(stream)
    key = StreamKey.objects.filter(stream=stream, revoked_at__isnull=True).first()
    if key is None:
        raise ConflictError("This stream has no active key to revoke.", code="no_active_key")
    _keys_revoke(stream=stream, keys=[key])
    return key


def stream_key_match(*, stream: Stream, secret: str) -> StreamKey | None:
    """The stream's active key whose secret is ``secret`` (constant-time comparison)."""
    candidate = StreamKey.digest_of(secret)
    for key in StreamKey.objects.filter(stream=stream, revoked_at__isnull=True):
        if hmac.compare_digest(candidate, key.digest):
            return key
    return None


def stream_key_verify(*, stream: Stream, secret: str) -> bool:
    """Whether ``secret`` is the stream's active key (constant-time comparison)."""
    return stream_key_match(stream=stream, secret=secret) is not None


def stream_media_set(*, stream: Stream, mic_muted: bool, camera_off: bool) -> bool:
    """Keep what the live broadcast's publisher says it sends (its microphone muted, its
    camera off), which its viewers show over the video; whether that changed. A stream not
    live is refused (``not_live``)."""
    rows = Stream.objects.filter(pk=stream.pk, state=Stream.State.LIVE)
    if not rows.exists():
        raise ConflictError("The stream is not live, so it sends nothing.", code="not_live")
    changed = rows.exclude(mic_muted=mic_muted, camera_off=camera_off).update(
        mic_muted=mic_muted, camera_off=camera_off
    )
    stream.mic_muted, stream.camera_off = mic_muted, camera_off
    return changed > 0


def stream_viewer_count_change(*, stream: Stream, delta: int) -> Stream:
    """Add ``delta`` (may be negative) to the current viewers, never below zero, and raise
    the peak with it, in one UPDATE, so concurrent joins and leaves never lose a count.
    """
    current = Greatest(F("viewer_count") + delta, Value(0))
    Stream.objects.filter(pk=stream.pk).update(
        viewer_count=current, peak_viewer_count=Greatest(F("peak_viewer_count"), current)
    )
    stream.refresh_from_db(fields=["viewer_count", "peak_viewer_count"])
    return stream


def stream_poster_set(*, stream_id: int, jpeg: bytes) -> Stream | None:
    """Keep ``jpeg`` (a thumbnail of the live video, ``sfu.thumbnail``) as the stream's
    poster, in place of the one before, whose file goes. Each poster has a file name of its
    own, so no cache or storage backend can serve the previous one under its name. None
    (and nothing kept) if the stream was deleted meanwhile."""
    taken_at = timezone.now()
    name = thumbnail_storage().save(
        f"posters/{stream_id}/{int(taken_at.timestamp() * 1000)}.jpg", ContentFile(jpeg)
    )
    with transaction.atomic():
        stream = Stream.objects.select_for_update().filter(pk=stream_id).first()
        if stream is None:
            previous = name
        else:
            previous = stream.poster
            stream.poster = name
            stream.poster_taken_at = taken_at
            stream.save(update_fields=["poster", "poster_taken_at"])
    if previous:
        _poster_file_delete(previous)
    return stream


def _poster_file_delete(name: str) -> None:
    try:
        thumbnail_storage().delete(name)
    except OSError:  # gone already, or the storage is away: an orphan file, nothing worse
        logger.warning("poster file not deleted", extra={"poster": name}, exc_info=True)
