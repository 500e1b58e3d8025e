"""Cluster mode's shared state in Redis: which SFU workers are alive, their load, and
where each broadcast's origin is.

Keys (all under ``<prefix>:sfu:``, the channel layer's prefix, ``onair`` by default)::

    workers                 set     every worker id ever heard from and not yet forgotten
    worker:<id>             string  the worker's record (JSON), expiring WORKER_TTL_SECONDS
                                    after its last heartbeat: a missing record = a dead worker
    worker:<id>:streams     set     ids of the streams it has routers for (origin or edge)
    origin:<stream id>      string  the id of the worker holding the stream's publisher
    gone:<id>               string  claimed by the one worker that announces <id>'s death
    http:<token>            string  a WHIP/WHEP session resource (JSON), expiring
                                    SESSION_TTL_SECONDS after its worker last saw its peer
    http-peer:<kind>:<sfu id>
                            string  the token of the session of that SFU peer (same TTL)
    http-ended:<token>      string  a session whose peer is gone (moved from http:<token>),
                                    kept ENDED_SESSION_TTL_SECONDS so a late DELETE finds it

Stream state and viewer counts are not here: they are in the database.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from redis.asyncio import Redis

HEARTBEAT_SECONDS = 0.5
WORKER_TTL_SECONDS = 2.5
_GONE_CLAIM_SECONDS = 60
SESSION_TTL_SECONDS = 60
ENDED_SESSION_TTL_SECONDS = 60
_END_SESSION = """
local token = redis.call('GETDEL', KEYS[1])
if not token then
    return false
end
local record = redis.call('GETDEL', ARGV[1] .. token)
if not record then
    return false
end
redis.call('SET', ARGV[2] .. token, record, 'EX', ARGV[3])
return record
"""
_REFRESH_SESSIONS = """
for _, peer in ipairs(KEYS) do
    local token = redis.call('GET', peer)
    if token then
        redis.call('EXPIRE', peer, ARGV[1])
        redis.call('EXPIRE', ARGV[2] .. token, ARGV[1])
    end
end
return 0
"""
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[1])
    return ARGV[1]
end
return current
"""


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's heartbeat: where to reach it and how loaded it is.

    ``pipes_in``: stream id → the edge end's counters and the origin's id;
    ``pipes_out``: stream id → edge id → the origin end's counters;
    ``producers``: stream id → packets received from the publisher (origin routers);
    ``publishing``: ids of the streams whose publisher is here, connected or in its grace.
    """

    id: str
    channel: str
    host: str
    pid: int
    viewers: int = 0
    publishers: int = 0
    routers: int = 0
    packets_per_second: float = 0.0
    cpu_percent: float = 0.0
    pipes_in: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipes_out: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    producers: dict[str, int] = field(default_factory=dict)
    publishing: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerInfo:
        return cls(**json.loads(raw))


class SfuRegistry:
    """The keys above, for one Redis connection pool per event loop."""

    def __init__(self, url: str, *, prefix: str = "onair") -> None:
        self._url = url
        self._prefix = f"{prefix}:sfu:"
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_settings(cls) -> SfuRegistry:
        """The Redis of the channel layer: one service for both."""
        config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
        hosts = config.get("hosts", [])
        if not hosts:
            raise RuntimeError("cluster mode needs the Redis channel layer: set REDIS_URL")
        host = hosts[0]
        url = str(host["address"] if isinstance(host, dict) else host)
        return cls(url, prefix=str(config.get("prefix", "onair")))

    @property
    def _redis(self) -> Redis:
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

    # --- workers -----------------------------------------------------------------------

    async def heartbeat(self, info: WorkerInfo) -> bool:
        """Refresh the worker's record. True if it had been declared dead meanwhile (its
        loop stalled past the TTL): its sessions were moved elsewhere."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(
                f"{self._prefix}worker:{info.id}", info.to_json(), px=int(WORKER_TTL_SECONDS * 1000)
            )
            pipe.sadd(f"{self._prefix}workers", info.id)
            pipe.getdel(f"{self._prefix}gone:{info.id}")
            *_, declared_gone = await pipe.execute()
        return declared_gone is not None

    async def deregister(self, worker_id: str) -> None:
        """A worker stopping: its record goes now, so the others announce it at once."""
        await self._redis.delete(f"{self._prefix}worker:{worker_id}")

    async def _members(self, key: str) -> list[str]:
        return sorted(str(m) for m in await self._redis.smembers(key))

    async def workers(self) -> list[WorkerInfo]:
        """The live workers, by id."""
        ids = await self._members(f"{self._prefix}workers")
        if not ids:
            return []
        records = await self._redis.mget([f"{self._prefix}worker:{i}" for i in ids])
        return [WorkerInfo.from_json(r) for r in records if r is not None]

    async def worker(self, worker_id: str) -> WorkerInfo | None:
        record = await self._redis.get(f"{self._prefix}worker:{worker_id}")
        return WorkerInfo.from_json(record) if record is not None else None

    async def gone_workers(self) -> list[str]:
        """Workers still listed whose record expired."""
        ids = await self._members(f"{self._prefix}workers")
        if not ids:
            return []
        records = await self._redis.mget([f"{self._prefix}worker:{i}" for i in ids])
        return [i for i, r in zip(ids, records, strict=True) if r is None]

    async def claim_gone(self, worker_id: str) -> bool:
        """True for exactly one caller per dead worker: the one that announces it."""
        claimed = await self._redis.set(
            f"{self._prefix}gone:{worker_id}", "1", nx=True, ex=_GONE_CLAIM_SECONDS
        )
        return bool(claimed)

    async def forget(self, worker_id: str) -> list[str]:
        """Drop a dead worker; returns the streams it had routers for."""
        key = f"{self._prefix}worker:{worker_id}:streams"
        streams = await self._members(key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(key)
            pipe.srem(f"{self._prefix}workers", worker_id)
            await pipe.execute()
        return streams

    async def add_stream(self, worker_id: str, stream_id: str) -> None:
        await self._redis.sadd(f"{self._prefix}worker:{worker_id}:streams", stream_id)

    async def remove_stream(self, worker_id: str, stream_id: str) -> None:
        await self._redis.srem(f"{self._prefix}worker:{worker_id}:streams", stream_id)

    # --- placement ---------------------------------------------------------------------

    async def origin(self, stream_id: str) -> str | None:
        value = await self._redis.get(f"{self._prefix}origin:{stream_id}")
        return str(value) if value is not None else None

    async def set_origin(self, stream_id: str, worker_id: str, *, replacing: str | None) -> str:
        """Make ``worker_id`` the stream's origin if the stored one is still ``replacing``
        (None: no origin yet); otherwise another process chose first. Returns the origin
        that stands."""
        chosen = await self._redis.eval(
            _COMPARE_AND_SET, 1, f"{self._prefix}origin:{stream_id}", worker_id, replacing or ""
        )
        return str(chosen)

    async def clear_origin(self, stream_id: str, *, worker_id: str | None = None) -> None:
        """Forget the stream's origin (only if it is ``worker_id``, when given)."""
        key = f"{self._prefix}origin:{stream_id}"
        if worker_id is None or await self._redis.get(key) == worker_id:
            await self._redis.delete(key)

    # --- WHIP/WHEP session resources -----------------------------------------------------

    async def session_put(self, *, token: str, peer: str, record: str) -> None:
        """Store a session's ``record`` under its token, and its token under ``peer``
        (``<kind>:<sfu id>``)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self._prefix}http:{token}", record, ex=SESSION_TTL_SECONDS)
            pipe.set(f"{self._prefix}http-peer:{peer}", token, ex=SESSION_TTL_SECONDS)
            await pipe.execute()

    async def session_get(self, token: str) -> str | None:
        record = await self._redis.get(f"{self._prefix}http:{token}")
        return str(record) if record is not None else None

    async def session_lookup(self, token: str) -> tuple[str, bool] | None:
        """A session's record, live or ended, and whether it ended."""
        live, ended = await self._redis.mget(
            [f"{self._prefix}http:{token}", f"{self._prefix}http-ended:{token}"]
        )
        if live is not None:
            return str(live), False
        return (str(ended), True) if ended is not None else None

    async def sessions(self) -> list[str]:
        """Every session's record: a scan, for rare needs (a stream key revoked)."""
        keys = [key async for key in self._redis.scan_iter(match=f"{self._prefix}http:*")]
        records = await self._redis.mget(keys) if keys else []
        return [str(record) for record in records if record is not None]

    async def session_get_peer(self, peer: str) -> str | None:
        token = await self._redis.get(f"{self._prefix}http-peer:{peer}")
        return await self.session_get(str(token)) if token is not None else None

    async def session_replace(self, *, token: str, record: str) -> bool:
        """Save ``record`` only if the session is still there (atomic: ``SET XX``)."""
        return bool(
            await self._redis.set(f"{self._prefix}http:{token}", record, xx=True, keepttl=True)
        )

    async def session_pop(self, peer: str) -> str | None:
        """Remove the session of ``peer``; its record, for exactly one caller."""
        token = await self._redis.getdel(f"{self._prefix}http-peer:{peer}")
        if token is None:
            return None
        record = await self._redis.getdel(f"{self._prefix}http:{token!s}")
        return str(record) if record is not None else None

    async def session_end(self, peer: str) -> str | None:
        """Keep the session of ``peer``, whose peer is gone, as ended for
        ENDED_SESSION_TTL_SECONDS; its record, for exactly one caller (atomic, as
        ``session_pop``, with which it competes)."""
        record = await self._redis.eval(
            _END_SESSION,
            1,
            f"{self._prefix}http-peer:{peer}",
            f"{self._prefix}http:",
            f"{self._prefix}http-ended:",
            ENDED_SESSION_TTL_SECONDS,
        )
        return str(record) if record is not None else None

    async def session_discard_ended(self, token: str) -> bool:
        """Forget an ended session; True for the one caller that did."""
        return bool(await self._redis.delete(f"{self._prefix}http-ended:{token}"))

    async def worker_sessions_end(self, worker_id: str) -> list[str]:
        """End the sessions of a dead worker's peers (their ids carry its id, and worker ids
        are plain ``w<hex>``); the records this caller ended. A scan, for a rare event."""
        peers = [
            str(key).removeprefix(f"{self._prefix}http-peer:")
            async for key in self._redis.scan_iter(
                match=f"{self._prefix}http-peer:*:{worker_id}.*", count=1000
            )
        ]
        records = [await self.session_end(peer) for peer in peers]
        return [record for record in records if record is not None]

    async def sessions_refresh(self, peers: list[str]) -> None:
        """Another SESSION_TTL_SECONDS for the sessions of these live peers."""
        if peers:
            await self._redis.eval(
                _REFRESH_SESSIONS,
                len(peers),
                *[f"{self._prefix}http-peer:{peer}" for peer in peers],
                SESSION_TTL_SECONDS,
                f"{self._prefix}http:",
            )
