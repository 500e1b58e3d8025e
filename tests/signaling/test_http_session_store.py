"""WHIP/WHEP session stores: the in-memory one of the embedded default and the Redis one of
cluster mode (real Redis, as in test_sfu_registry) behave alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from signaling.http_session_store import (
    HttpSession,
    MemorySessionStore,
    RedisSessionStore,
    SessionKind,
    SessionStore,
    peer_key,
)
from signaling.sfu_registry import SESSION_TTL_SECONDS, SfuRegistry
from tests.signaling.test_sfu_registry import REDIS_URL, _redis_unreachable

REDIS_SKIP = pytest.mark.skipif(_redis_unreachable() is not None, reason="Redis unreachable")


def _session(kind: SessionKind = SessionKind.WHEP) -> HttpSession:
    return HttpSession(
        token=uuid.uuid4().hex,
        kind=kind,
        stream_id=7,
        slug="talk",
        sfu_id=f"w1.{uuid.uuid4().hex[:8]}",
        answer_sdp="v=0\r\n",
        etag='"e1"',
        remote_ufrag="abcd",
        viewer_record_id=3 if kind is SessionKind.WHEP else None,
    )


@pytest.fixture
async def redis_registry() -> AsyncIterator[SfuRegistry]:
    prefix = f"onair-test-{uuid.uuid4().hex[:8]}"
    registry = SfuRegistry(REDIS_URL, prefix=prefix)
    yield registry
    await registry.close()
    client = Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(f"{prefix}:*"):
        await client.delete(key)
    await client.aclose()


async def test_memory_sessions() -> None:
    await _check_store(MemorySessionStore())


@pytest.mark.redis
@REDIS_SKIP
async def test_redis_sessions(redis_registry: SfuRegistry) -> None:
    await _check_store(RedisSessionStore(redis_registry))


async def _check_store(store: SessionStore) -> None:
    """Found by token, updated, popped by its peer once."""
    session = _session()
    await store.put(session)
    assert await store.get(session.token) == session
    session.etag = '"e2"'
    await store.put(session)
    found = await store.get(session.token)
    assert found is not None
    assert found.etag == '"e2"'
    assert found.kind is SessionKind.WHEP
    assert found.path == f"/whep/talk/{session.token}"

    assert await store.pop(kind=SessionKind.WHIP, sfu_id=session.sfu_id) is None
    assert await store.pop(kind=SessionKind.WHEP, sfu_id=session.sfu_id) == found
    assert await store.pop(kind=SessionKind.WHEP, sfu_id=session.sfu_id) is None
    assert await store.get(session.token) is None


@pytest.mark.redis
@REDIS_SKIP
async def test_redis_sessions_expire_unless_their_worker_refreshes_them(
    redis_registry: SfuRegistry,
) -> None:
    store = RedisSessionStore(redis_registry)
    live, orphan = _session(SessionKind.WHIP), _session()
    await store.put(live)
    await store.put(orphan)
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    token_key = f"{redis_registry._prefix}http:"
    for session in (live, orphan):
        await client.expire(f"{token_key}{session.token}", 5)
    await redis_registry.sessions_refresh([peer_key(live.kind, live.sfu_id), "whep:w9.gone"])
    assert await client.ttl(f"{token_key}{live.token}") > SESSION_TTL_SECONDS - 5
    assert await client.ttl(f"{token_key}{orphan.token}") <= 5
    await client.aclose()
