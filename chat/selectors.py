"""Reads of the chat: a stream's settings, the history a page joins with, who may post or
moderate, and the chat of a recording's broadcast for its replay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q

from broadcast.models import Stream
from broadcast.selectors import stream_is_managed_by
from chat.models import ChatMessage, ChatRestriction, ChatSettings
from recordings.models import Recording

# A replay page carries its broadcast's chat; past this many messages, the first ones.
REPLAY_MAX_MESSAGES = 5000


def chat_settings_get(*, stream: Stream) -> ChatSettings:
    """The stream's chat settings, or the defaults (unsaved) if its owner never set any."""
    found = ChatSettings.objects.filter(stream=stream).first()
    return found if found is not None else ChatSettings(stream=stream)


def chat_settings_payload(settings: ChatSettings) -> dict[str, Any]:
    """The ``settings`` object of the chat messages (docs/SIGNALING.md)."""
    return {
        "enabled": settings.enabled,
        "slow_mode_seconds": settings.slow_mode_seconds,
        "guests_allowed": settings.guests_allowed,
    }


def chat_may_moderate(*, stream: Stream, user: User | AnonymousUser) -> bool:
    """The stream's owner and staff moderate its chat."""
    return stream_is_managed_by(stream=stream, user=user)


def chat_message_payload(message: ChatMessage) -> dict[str, Any]:
    """The ``message`` object of the chat messages. ``owner``: posted by the stream's owner."""
    return {
        "id": message.pk,
        "author": message.author_name,
        "guest": message.author_id is None,
        "owner": message.author_id is not None and message.author_id == message.stream.owner_id,
        "text": message.text,
        "at": message.created_at.isoformat(),
    }


def chat_history(*, stream: Stream, limit: int) -> list[ChatMessage]:
    """The last ``limit`` messages of the stream's current (or last) broadcast, oldest first,
    without the deleted ones."""
    if limit <= 0:
        return []
    newest = list(
        ChatMessage.objects.select_related("author", "stream")
        .filter(stream=stream, broadcast_started_at=stream.started_at, deleted_at__isnull=True)
        .order_by("-created_at", "-id")[:limit]
    )
    newest.reverse()
    return newest


def chat_restriction_active(
    *, stream: Stream, sender: str, now: datetime
) -> ChatRestriction | None:
    """The ban, or else the time-out not yet over, that keeps ``sender`` out of the stream's
    chat."""
    active = list(
        ChatRestriction.objects.filter(stream=stream, sender=sender).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )
    )
    ban = next((r for r in active if r.expires_at is None), None)
    if ban is not None:
        return ban
    return max(active, key=lambda r: r.expires_at or now, default=None)


def chat_replay(*, recording: Recording) -> list[dict[str, Any]]:
    """The chat of the broadcast ``recording`` recorded, each message at its offset into the
    recording in seconds (those posted before the recording began at 0), deleted ones left
    out. For the replay page, which shows each as the video reaches it."""
    messages = ChatMessage.objects.select_related("author", "stream").filter(
        stream_id=recording.stream_id, deleted_at__isnull=True
    )
    # The broadcast the recording belongs to: the latest one begun by its start.
    broadcast = (
        ChatMessage.objects.filter(
            stream_id=recording.stream_id, broadcast_started_at__lte=recording.started_at
        )
        .order_by("-broadcast_started_at")
        .values_list("broadcast_started_at", flat=True)
        .first()
    )
    if broadcast is None:
        return []
    messages = messages.filter(broadcast_started_at=broadcast)
    if recording.ended_at is not None:
        messages = messages.filter(created_at__lte=recording.ended_at)
    replayed = []
    for message in messages.order_by("created_at", "id")[:REPLAY_MAX_MESSAGES]:
        offset = (message.created_at - recording.started_at).total_seconds()
        replayed.append({**chat_message_payload(message), "offset": round(max(offset, 0.0), 3)})
    return replayed
