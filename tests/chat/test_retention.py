"""The chat's retention: messages older than ``ONAIR_CHAT_RETENTION_DAYS`` and time-outs
that ran out are deleted, by the servers' hourly task too; bans stay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone
from pytest_django.fixtures import Settings

from chat.models import ChatMessage, ChatRestriction
from chat.services import chat_expire
from onair.retention import expire_periodically

pytestmark = pytest.mark.django_db(transaction=True)


def _chat(make_stream: Callable[..., Any], user: User) -> tuple[ChatMessage, ChatMessage]:
    stream, _ = make_stream(title="Talk")
    now = timezone.now()
    old = ChatMessage.objects.create(
        stream=stream, author=user, sender="user:1", text="old", created_at=now - timedelta(days=31)
    )
    recent = ChatMessage.objects.create(
        stream=stream, author=user, sender="user:1", text="new", created_at=now - timedelta(days=29)
    )
    for kind, expires_at in (
        (ChatRestriction.Kind.TIMEOUT, now - timedelta(seconds=1)),  # ran out
        (ChatRestriction.Kind.TIMEOUT, now + timedelta(minutes=5)),
        (ChatRestriction.Kind.BAN, None),
    ):
        ChatRestriction.objects.create(
            stream=stream, sender="user:2", kind=kind, expires_at=expires_at
        )
    return old, recent


def test_old_messages_and_past_time_outs_go_the_rest_stays(
    make_stream: Callable[..., Any], user: User
) -> None:
    _, recent = _chat(make_stream, user)
    assert chat_expire() == (1, 1)
    assert list(ChatMessage.objects.values_list("pk", flat=True)) == [recent.pk]
    kinds = sorted(ChatRestriction.objects.values_list("kind", flat=True))
    assert kinds == [ChatRestriction.Kind.BAN, ChatRestriction.Kind.TIMEOUT]
    assert chat_expire() == (0, 0)


def test_no_retention_keeps_every_message(
    make_stream: Callable[..., Any], user: User, settings: Settings
) -> None:
    settings.ONAIR = {**settings.ONAIR, "CHAT_RETENTION_DAYS": 0}
    _chat(make_stream, user)
    assert chat_expire() == (0, 1)
    assert ChatMessage.objects.count() == 2


async def test_the_servers_hourly_task_expires_the_chat(
    make_stream: Callable[..., Any], user: User
) -> None:
    old, _ = await database_sync_to_async(_chat)(make_stream, user)
    task = asyncio.ensure_future(expire_periodically(every=0.05))
    try:
        for _ in range(100):
            if not await database_sync_to_async(ChatMessage.objects.filter(pk=old.pk).exists)():
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not await database_sync_to_async(ChatMessage.objects.filter(pk=old.pk).exists)()
