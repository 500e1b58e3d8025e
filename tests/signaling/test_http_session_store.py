"""WHIP/WHEP session stores: the in-memory one of the embedded default and the Redis one of
cluster mode (real Redis, as in test_sfu_registry) behave alike."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from signaling.http_session_store import (
    ENDED_SESSION_TTL_SECONDS,
    SESSION_TTL_SECONDS,
    HttpSession,
    MemorySessionStore,
    RedisSessionStore,
    SessionKind,
    SessionStore,
)
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
def prefix() -> str:
    return f"onair-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis_store(prefix: str) -> AsyncIterator[RedisSessionStore]:
    store = RedisSessionStore(REDIS_URL, prefix=prefix)
    yield store
    await store.close()
    client = Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(f"{prefix}:*"):
        await client.delete(key)
    await client.aclose()


async def test_memory_sessions() -> None:
    await _check_store(MemorySessionStore())
    await _check_ending(MemorySessionStore())


async def test_memory_ended_sessions_are_kept_a_while_and_a_bounded_number() -> None:
    store = MemorySessionStore(ended_ttl=60, max_ended=2)
    sessions = [_session() for _ in range(3)]
    for session in sessions:
        await store.put(session)
        await store.end(kind=session.kind, sfu_id=session.sfu_id)
    assert [await store.get(s.token) is not None for s in sessions] == [False, True, True]

    store = MemorySessionStore(ended_ttl=0.05, max_ended=2)
    session = _session()
    await store.put(session)
    await store.end(kind=session.kind, sfu_id=session.sfu_id)
    assert await store.get(session.token) is not None
    await asyncio.sleep(0.1)
    assert await store.get(session.token) is None


@pytest.mark.redis
@REDIS_SKIP
async def test_redis_sessions(redis_store: RedisSessionStore) -> None:
    await _check_store(redis_store)
    await _check_ending(redis_store)


@pytest.mark.redis
@REDIS_SKIP
async def test_redis_ended_sessions_expire(redis_store: RedisSessionStore, prefix: str) -> None:
    store = redis_store
    session = _session()
    await store.put(session)
    await store.end(kind=session.kind, sfu_id=session.sfu_id)
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    ttl = await client.ttl(f"{prefix}:sfu:http-ended:{session.token}")
    await client.aclose()
    assert 0 < ttl <= ENDED_SESSION_TTL_SECONDS


@pytest.mark.redis
@REDIS_SKIP
async def test_redis_a_dead_workers_sessions_end_once(redis_store: RedisSessionStore) -> None:
    store = redis_store
    theirs = [_session(), _session(SessionKind.WHIP)]
    mine = _session()
    mine.sfu_id = f"w2.{mine.sfu_id.partition('.')[2]}"
    for session in (*theirs, mine):
        await store.put(session)
    ended = await store.end_worker("w1")
    assert sorted(s.token for s in ended) == sorted(s.token for s in theirs)
    assert await store.end_worker("w1") == []
    for session in theirs:
        found = await store.get(session.token)
        assert found is not None
        assert found.ended
    assert await store.get_peer(kind=mine.kind, sfu_id=mine.sfu_id) == mine


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
    assert not await store.discard(session.token)  # a DELETEd session leaves nothing


async def _check_ending(store: SessionStore) -> None:
    """A session whose peer went away is ended once, found as ended, then discarded once."""
    session = _session()
    await store.put(session)
    ended = await store.end(kind=SessionKind.WHEP, sfu_id=session.sfu_id)
    assert ended == session
    assert await store.end(kind=SessionKind.WHEP, sfu_id=session.sfu_id) is None
    assert await store.pop(kind=SessionKind.WHEP, sfu_id=session.sfu_id) is None
    assert await store.get_peer(kind=SessionKind.WHEP, sfu_id=session.sfu_id) is None
    assert not await store.update(session)
    found = await store.get(session.token)
    assert found is not None
    assert found.ended
    assert found.viewer_record_id == session.viewer_record_id
    assert await store.with_key(0) == []
    assert await store.discard(session.token)
    assert not await store.discard(session.token)
    assert await store.get(session.token) is None


def test_a_record_leaves_out_whether_it_ended() -> None:
    """Where a record is kept says whether it ended (and records stay readable by a process
    that knows no ``ended``)."""
    session = _session()
    session.ended = True
    assert "ended" not in json.loads(session.to_json())
    assert HttpSession.from_json(session.to_json()) == replace(session, ended=False)


@pytest.mark.redis
@REDIS_SKIP
async def test_redis_sessions_expire_unless_their_worker_refreshes_them(
    redis_store: RedisSessionStore, prefix: str
) -> None:
    store = redis_store
    live, orphan = _session(SessionKind.WHIP), _session()
    await store.put(live)
    await store.put(orphan)
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    token_key = f"{prefix}:sfu:http:"
    for session in (live, orphan):
        await client.expire(f"{token_key}{session.token}", 5)
    await store.refresh([(live.kind, live.sfu_id), (SessionKind.WHEP, "w9.gone")])
    assert await client.ttl(f"{token_key}{live.token}") > SESSION_TTL_SECONDS - 5
    assert await client.ttl(f"{token_key}{orphan.token}") <= 5
    await client.aclose()
