"""Redis for cluster mode's shared state: the channel layer's server, one pool per loop."""

from __future__ import annotations

import asyncio
import weakref
from typing import Self

from django.conf import settings
from redis.asyncio import Redis


def channel_layer_redis() -> tuple[str, str]:
    """The URL and key prefix of the channel layer's Redis: one service for both."""
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    hosts = config.get("hosts", [])
    if not hosts:
        raise RuntimeError("cluster mode needs the Redis channel layer: set REDIS_URL")
    host = hosts[0]
    url = str(host["address"] if isinstance(host, dict) else host)
    return url, str(config.get("prefix", "onair"))


class RedisPerLoop:
    """A Redis client for each event loop that asks (a pool is bound to its loop)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def client(self) -> Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = Redis.from_url(self._url, decode_responses=True)
            self._clients[loop] = client
        return client

    async def close(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


class RedisKeys:
    """One family of OnAir's keys in the channel layer's Redis (``<prefix>:sfu:…``), with a
    client for each event loop: the base of the worker directory and the WHIP/WHEP session
    store."""

    def __init__(self, url: str, *, prefix: str = "onair") -> None:
        self._pool = RedisPerLoop(url)
        self._prefix = f"{prefix}:sfu:"

    @classmethod
    def from_settings(cls) -> Self:
        """On the channel layer's Redis: one service for both."""
        url, prefix = channel_layer_redis()
        return cls(url, prefix=prefix)

    @property
    def _redis(self) -> Redis:
        return self._pool.client

    async def close(self) -> None:
        await self._pool.close()
