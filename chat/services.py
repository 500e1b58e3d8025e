"""Writes of the chat: posting (with every rule a post must pass), deleting, moderating and
the stream's chat settings. Announcing a change to the pages is the caller's
(``signaling``), once this has committed."""

from __future__ import annotations

import hashlib
import hmac
import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings as django_settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from broadcast.models import Stream
from chat.models import ChatMessage, ChatRestriction, ChatSettings
from chat.selectors import chat_may_moderate, chat_restriction_active, chat_settings_get
from onair.conf import onair_settings
from onair.exceptions import ApplicationError, InvalidInputError, NotFoundError

GUEST_NAME_MAX_CHARS = 24
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
MAX_SLOW_MODE_SECONDS = 3600


class ChatRefusedError(ApplicationError):
    """A post or a moderation the chat's rules refuse; ``retry_after``: seconds until the
    same post would pass (a rate limit, slow mode, a time-out), else ``None``."""

    code = "chat_refused"

    def __init__(self, message: str, *, code: str, retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Sender:
    """Who posts: an account, or a guest known by their address (kept only digested)."""

    key: str
    user: User | None
    guest_name: str = ""


def chat_sender(*, user: User | AnonymousUser, address: str | None, guest_name: str = "") -> Sender:
    if user.is_authenticated:
        assert isinstance(user, User)
        return Sender(key=f"user:{user.pk}", user=user)
    digest = hmac.new(
        django_settings.SECRET_KEY.encode(), (address or "").encode(), hashlib.sha256
    ).hexdigest()
    return Sender(key=f"guest:{digest[:32]}", user=None, guest_name=guest_name)


def _clean(text: str) -> str:
    """Control characters (NUL, escapes, line breaks) become spaces: one line of plain text."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in text).strip()


def _wait(until: timedelta) -> int:
    return max(1, math.ceil(until.total_seconds()))


def _check_rate(*, sender: Sender, now: datetime) -> None:
    chat = onair_settings().chat
    if not chat.rate_messages:
        return
    window_start = now - timedelta(seconds=chat.rate_seconds)
    recent = list(
        ChatMessage.objects.filter(sender=sender.key, created_at__gt=window_start)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[: chat.rate_messages]
    )
    if len(recent) >= chat.rate_messages:
        retry = _wait(recent[-1] + timedelta(seconds=chat.rate_seconds) - now)
        raise ChatRefusedError(
            f"You are sending messages too fast: at most {chat.rate_messages} every "
            f"{chat.rate_seconds:g} s. Try again in {retry} s.",
            code="chat_rate_limited",
            retry_after=retry,
        )


def _check_restriction(*, stream: Stream, sender: Sender, now: datetime) -> None:
    restriction = chat_restriction_active(stream=stream, sender=sender.key, now=now)
    if restriction is None:
        return
    if restriction.expires_at is None:
        raise ChatRefusedError(
            "You are banned from this chat: your messages are not posted.", code="chat_banned"
        )
    retry = _wait(restriction.expires_at - now)
    raise ChatRefusedError(
        f"You are timed out of this chat for another {retry} s.",
        code="chat_timed_out",
        retry_after=retry,
    )


def _check_slow_mode(
    *, stream: Stream, settings: ChatSettings, sender: Sender, now: datetime
) -> None:
    if not settings.slow_mode_seconds:
        return
    last = (
        ChatMessage.objects.filter(stream=stream, sender=sender.key)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if last is not None and now - last < timedelta(seconds=settings.slow_mode_seconds):
        retry = _wait(last + timedelta(seconds=settings.slow_mode_seconds) - now)
        raise ChatRefusedError(
            f"Slow mode is on: one message every {settings.slow_mode_seconds} s. "
            f"Try again in {retry} s.",
            code="chat_slow_mode",
            retry_after=retry,
        )


def _check_guest(*, stream: Stream, settings: ChatSettings, sender: Sender, now: datetime) -> str:
    """A guest may post where the owner allows guests, under a name; returns the name."""
    if not settings.guests_allowed:
        raise ChatRefusedError("Log in to chat.", code="chat_login_required")
    name = _clean(sender.guest_name)
    if not name:
        raise ChatRefusedError("Pick a name to chat as a guest.", code="chat_name_required")
    if len(name) > GUEST_NAME_MAX_CHARS:
        raise InvalidInputError(
            f"A guest name is at most {GUEST_NAME_MAX_CHARS} characters.", code="chat_bad_name"
        )
    cap = onair_settings().chat.guest_messages_per_stream
    if cap:
        recent = ChatMessage.objects.filter(
            stream=stream, author__isnull=True, created_at__gt=now - timedelta(minutes=1)
        ).count()
        if recent >= cap:
            raise ChatRefusedError(
                "Guests are posting a lot here right now; try again in a minute, or log in.",
                code="chat_busy",
                retry_after=60,
            )
    return name


def chat_post(
    *,
    stream: Stream,
    user: User | AnonymousUser,
    address: str | None,
    text: str,
    guest_name: str = "",
) -> ChatMessage:
    """Post ``text`` to the stream's chat, in its current (or last) broadcast, if every rule
    lets it: the chat is on, the poster has an account (or is a named guest where guests
    may post), is neither banned nor timed out, keeps to the length, the rate limit and slow
    mode (moderators skip slow mode)."""
    text = _clean(text)
    max_chars = onair_settings().chat.max_chars
    if not text:
        raise InvalidInputError("A chat message needs some text.", code="chat_empty")
    if len(text) > max_chars:
        raise InvalidInputError(
            f"A chat message is at most {max_chars} characters; this one has {len(text)}.",
            code="chat_too_long",
        )
    stream.refresh_from_db(fields=["started_at", "owner"])
    settings = chat_settings_get(stream=stream)
    if not settings.enabled:
        raise ChatRefusedError("The chat is off.", code="chat_off")
    sender = chat_sender(user=user, address=address, guest_name=guest_name)
    now = timezone.now()
    name = (
        ""
        if sender.user is not None
        else _check_guest(stream=stream, settings=settings, sender=sender, now=now)
    )
    _check_restriction(stream=stream, sender=sender, now=now)
    if not chat_may_moderate(stream=stream, user=user):
        _check_slow_mode(stream=stream, settings=settings, sender=sender, now=now)
    _check_rate(sender=sender, now=now)
    return ChatMessage.objects.create(
        stream=stream,
        broadcast_started_at=stream.started_at,
        author=sender.user,
        guest_name=name,
        sender=sender.key,
        text=text,
        created_at=now,
    )


def _moderator(*, stream: Stream, user: User | AnonymousUser) -> User:
    if not chat_may_moderate(stream=stream, user=user):
        raise ChatRefusedError(
            "Only the stream's owner and staff moderate its chat.", code="chat_forbidden"
        )
    assert isinstance(user, User)
    return user


def _message_of(*, stream: Stream, message_id: int) -> ChatMessage:
    message = (
        ChatMessage.objects.select_related("author", "stream")
        .filter(stream=stream, pk=message_id)
        .first()
    )
    if message is None:
        raise NotFoundError("No such chat message.", code="chat_no_message")
    return message


def chat_message_delete(*, message: ChatMessage, by: User | None) -> bool:
    """Hide ``message`` from the chat (kept, marked deleted, for the record); whether it
    was shown until now."""
    deleted = ChatMessage.objects.filter(pk=message.pk, deleted_at__isnull=True).update(
        deleted_at=timezone.now(), deleted_by=by
    )
    message.refresh_from_db(fields=["deleted_at", "deleted_by"])
    return bool(deleted)


def chat_delete(*, stream: Stream, user: User | AnonymousUser, message_id: int) -> ChatMessage:
    """A moderator deletes a message of the stream's chat."""
    moderator = _moderator(stream=stream, user=user)
    message = _message_of(stream=stream, message_id=message_id)
    chat_message_delete(message=message, by=moderator)
    return message


@transaction.atomic
def chat_restrict(
    *,
    stream: Stream,
    user: User | AnonymousUser,
    message_id: int,
    kind: str,
    seconds: int | None = None,
) -> ChatRestriction | None:
    """A moderator bans (``ban``), times out for ``seconds`` (``timeout``), or lets back in
    (``lift``: returns ``None``) the author of a message of the stream's chat. An earlier
    restriction of the same person on this stream is replaced."""
    moderator = _moderator(stream=stream, user=user)
    message = _message_of(stream=stream, message_id=message_id)
    if message.author is not None and chat_may_moderate(stream=stream, user=message.author):
        raise ChatRefusedError(
            "The stream's owner and staff cannot be banned or timed out.", code="chat_forbidden"
        )
    ChatRestriction.objects.filter(stream=stream, sender=message.sender).delete()
    if kind == "lift":
        return None
    expires_at = None
    if kind == ChatRestriction.Kind.TIMEOUT:
        if seconds is None or not 1 <= seconds <= MAX_TIMEOUT_SECONDS:
            raise InvalidInputError(
                f"A time-out lasts 1 to {MAX_TIMEOUT_SECONDS} seconds.", code="chat_invalid"
            )
        expires_at = timezone.now() + timedelta(seconds=seconds)
    return ChatRestriction.objects.create(
        stream=stream,
        sender=message.sender,
        user=message.author,
        guest_name=message.guest_name,
        kind=kind,
        expires_at=expires_at,
        created_by=moderator,
    )


def chat_settings_update(
    *,
    stream: Stream,
    user: User | AnonymousUser,
    enabled: bool | None = None,
    slow_mode_seconds: int | None = None,
    guests_allowed: bool | None = None,
) -> ChatSettings:
    """A moderator turns the chat on or off, sets slow mode, lets guests post or not."""
    _moderator(stream=stream, user=user)
    settings, _ = ChatSettings.objects.get_or_create(stream=stream)
    if enabled is not None:
        settings.enabled = enabled
    if slow_mode_seconds is not None:
        if not 0 <= slow_mode_seconds <= MAX_SLOW_MODE_SECONDS:
            raise InvalidInputError(
                f"Slow mode is 0 (off) to {MAX_SLOW_MODE_SECONDS} seconds.", code="chat_invalid"
            )
        settings.slow_mode_seconds = slow_mode_seconds
    if guests_allowed is not None:
        settings.guests_allowed = guests_allowed
    settings.save()
    return settings


def chat_expire(*, now: datetime | None = None) -> tuple[int, int]:
    """Delete the messages older than ``ONAIR_CHAT_RETENTION_DAYS`` (none when it is 0) and
    the time-outs that have run out; how many of each."""
    now = now or timezone.now()
    days = onair_settings().chat.retention_days
    messages = 0
    if days:
        messages, _ = ChatMessage.objects.filter(created_at__lt=now - timedelta(days=days)).delete()
    timeouts, _ = ChatRestriction.objects.filter(
        kind=ChatRestriction.Kind.TIMEOUT, expires_at__lte=now
    ).delete()
    return messages, timeouts
