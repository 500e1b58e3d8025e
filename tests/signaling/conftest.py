"""Fixtures of the in-process signaling tests: a stream's owner, a stream and its key, and
that stream live from an aiortc publisher through the in-process SFU."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create, stream_go_live
from signaling.gateway import gateway
from testpeers import TestPublisher


@pytest.fixture
async def owner() -> User:
    return await database_sync_to_async(User.objects.create_user)("owner", password="pw")


@pytest.fixture
async def stream_parts(owner: User) -> tuple[Stream, IssuedKey]:
    return await database_sync_to_async(stream_create)(owner=owner, title="Launch")


@pytest.fixture
async def live_stream(stream_parts: tuple[Stream, IssuedKey]) -> AsyncIterator[Stream]:
    stream, _ = stream_parts
    publisher = TestPublisher()
    result = await gateway.publish(
        stream_id=str(stream.pk), offer_sdp=await publisher.create_offer()
    )
    await publisher.accept_answer(result.answer_sdp)
    await database_sync_to_async(stream_go_live)(stream=stream)
    yield stream
    await publisher.close()
    await gateway.close_all()
