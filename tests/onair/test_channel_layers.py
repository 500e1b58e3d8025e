"""A round trip through channels-redis against the real Redis (127.0.0.1:6379 or REDIS_URL)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest
from channels_redis.core import RedisChannelLayer

from onair.settings.env import channel_layers

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_unreachable() -> str | None:
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 6379), timeout=2).close()
    except OSError as error:
        return f"Redis at {parts.hostname}:{parts.port or 6379} is unreachable: {error}"
    return None


pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(_redis_unreachable() is not None, reason=str(_redis_unreachable())),
]


@pytest.fixture
async def layer() -> RedisChannelLayer:
    config = channel_layers(REDIS_URL)["default"]["CONFIG"]
    layer = RedisChannelLayer(**{**config, "prefix": f"onair-test-{uuid.uuid4().hex[:8]}"})
    yield layer
    await layer.flush()
    await layer.close_pools()


async def test_send_and_receive(layer: RedisChannelLayer) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "stream.state", "state": "live"})
    assert await layer.receive(channel) == {"type": "stream.state", "state": "live"}


async def test_group_send_reaches_every_member(layer: RedisChannelLayer) -> None:
    group = "stream-demo"
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(group, first)
    await layer.group_add(group, second)

    await layer.group_send(group, {"type": "viewers", "count": 2})

    assert await layer.receive(first) == {"type": "viewers", "count": 2}
    assert await layer.receive(second) == {"type": "viewers", "count": 2}
    await layer.group_discard(group, second)
    await layer.group_send(group, {"type": "viewers", "count": 1})
    assert await layer.receive(first) == {"type": "viewers", "count": 1}


@pytest.mark.slow
async def test_a_receive_waits_past_the_blocking_read_timeout(layer: RedisChannelLayer) -> None:
    # channels-redis blocks 5 s per read; redis-py's default 5 s socket timeout used to cut
    # that read, crashing every consumer idle for 5 s.
    channel = await layer.new_channel()

    async def send_later() -> None:
        await asyncio.sleep(6)
        await layer.send(channel, {"type": "late"})

    sender = asyncio.ensure_future(send_later())
    assert await asyncio.wait_for(layer.receive(channel), 10) == {"type": "late"}
    await sender
