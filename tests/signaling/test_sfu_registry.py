"""The cluster registry against the real Redis (127.0.0.1:6379 db 9, or
TEST_CLUSTER_REDIS_URL): liveness by TTL, one announcer per death, origin compare-and-set,
and the request/reply protocol over channels-redis."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from channels_redis.core import RedisChannelLayer

from onair.exceptions import ConflictError
from signaling.gateway.cluster import ClusterGateway, call, encode_error
from signaling.gateway.contract import SfuUnavailableError, publisher_status, session_worker
from signaling.gateway.directory import WORKER_TTL_SECONDS, WorkerDirectory, WorkerInfo

REDIS_URL = os.environ.get("TEST_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/9")


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
async def registry() -> AsyncIterator[WorkerDirectory]:
    registry = WorkerDirectory(REDIS_URL)
    yield registry
    await registry.close()


def _worker(name: str = "") -> WorkerInfo:
    return WorkerInfo(
        id=name or f"w{uuid.uuid4().hex[:8]}", channel="specific.x!y", host="127.0.0.1", pid=1
    )


async def test_a_worker_without_heartbeats_is_gone_within_the_ttl(
    registry: WorkerDirectory,
) -> None:
    worker = _worker()
    await registry.heartbeat(worker)
    assert worker.id in [w.id for w in await registry.workers()]
    assert await registry.worker(worker.id) == worker
    await registry.add_stream(worker.id, "7")

    await asyncio.sleep(WORKER_TTL_SECONDS + 0.2)
    assert worker.id not in [w.id for w in await registry.workers()]
    assert worker.id in await registry.gone_workers()
    assert await registry.claim_gone(worker.id)
    assert not await registry.claim_gone(worker.id)  # one announcer
    assert await registry.forget(worker.id) == ["7"]
    assert worker.id not in await registry.gone_workers()

    # Only stalled, not dead: its next heartbeat says it was declared gone, once.
    assert await registry.heartbeat(worker)
    assert not await registry.heartbeat(worker)
    assert worker.id in [w.id for w in await registry.workers()]


async def test_the_first_origin_stands_and_a_dead_one_is_replaced(
    registry: WorkerDirectory,
) -> None:
    stream_id = uuid.uuid4().hex
    assert await registry.set_origin(stream_id, "w1", replacing=None) == "w1"
    assert await registry.set_origin(stream_id, "w2", replacing=None) == "w1"
    assert await registry.set_origin(stream_id, "w3", replacing="w1") == "w3"
    assert await registry.set_origin(stream_id, "w4", replacing="w1") == "w3"
    await registry.clear_origin(stream_id, worker_id="w1")
    assert await registry.origin(stream_id) == "w3"
    await registry.clear_origin(stream_id)
    assert await registry.origin(stream_id) is None


@pytest.fixture
async def layer() -> AsyncIterator[RedisChannelLayer]:
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=f"onair-test-{uuid.uuid4().hex[:8]}")
    yield layer
    await layer.flush()
    await layer.close_pools()


async def test_a_request_gets_its_reply_or_its_error(layer: RedisChannelLayer) -> None:
    channel = await layer.new_channel()

    async def serve_two() -> None:
        for _ in range(2):
            request = await layer.receive(channel)
            if request["method"] == "echo":
                reply = {"result": request["params"]}
            else:
                reply = {"error": encode_error(ConflictError("over", code="no_session"))}
            await layer.send(request["reply_to"], reply)

    server = asyncio.ensure_future(serve_two())
    assert await call(layer, channel, "echo", sdp="v=0") == {"sdp": "v=0"}
    with pytest.raises(ConflictError) as refused:
        await call(layer, channel, "refuse")
    assert refused.value.code == "no_session"
    await server


async def test_a_silent_worker_times_out_with_a_clear_error(
    layer: RedisChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("signaling.gateway.cluster.RPC_TIMEOUT_SECONDS", 0.3)
    with pytest.raises(SfuUnavailableError, match="did not answer"):
        await call(layer, await layer.new_channel(), "publish")


def test_session_ids_name_their_worker() -> None:
    assert session_worker("w1a2b3c4.5f0e-uuid") == "w1a2b3c4"


async def test_a_watch_page_is_told_reconnecting_when_the_origin_does_not_answer(
    layer: RedisChannelLayer,
    registry: WorkerDirectory,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ``welcome``'s publisher status asks the broadcast's origin worker; one that is
    stuck (not yet declared dead) must cost the page a late answer, not its connection."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    monkeypatch.setattr("signaling.gateway.cluster.RPC_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr("signaling.gateway.cluster.get_channel_layer", lambda: layer)
    gateway = ClusterGateway()
    gateway.directory = registry
    stuck = WorkerInfo(
        id=f"w{uuid.uuid4().hex[:8]}", channel=await layer.new_channel(), host="127.0.0.1", pid=1
    )
    await registry.heartbeat(stuck)
    stream_id = str(10_000 + uuid.uuid4().int % 10_000)
    assert await registry.set_origin(stream_id, stuck.id, replacing=None) == stuck.id

    assert await publisher_status(gateway, stream_id=stream_id, live=True) == "reconnecting"
    assert await publisher_status(gateway, stream_id=stream_id, live=False) is None
