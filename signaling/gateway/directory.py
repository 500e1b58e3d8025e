"""Cluster mode's worker directory in Redis: which SFU workers are alive, their load, and
where each broadcast's origin is.

Keys (all under ``<prefix>:sfu:``, the channel layer's prefix, ``onair`` by default)::

    workers                 set     every worker id ever heard from and not yet forgotten
    worker:<id>             string  the worker's record (JSON), expiring WORKER_TTL_SECONDS
                                    after its last heartbeat: a missing record = a dead worker
    worker:<id>:streams     set     ids of the streams it has routers for (origin or edge)
    origin:<stream id>      string  the id of the worker holding the stream's publisher
    gone:<id>               string  claimed by the one worker that announces <id>'s death
                                    (or by <id> itself, stopping with no live worker left)
    left                    set     workers that stopped with no live worker to announce
                                    them, holding streams: the next one to start moves
                                    their pages (their ``streams`` and ``origins`` sets)
    worker:<id>:origins     set     of a left worker: the streams it was the origin of

A clean stop of the whole cluster leaves no worker in ``workers`` and no ``origin:`` key;
a worker that held no stream leaves nothing (``gone:`` expires).

WHIP/WHEP session resources are under the same prefix (``signaling.http_session_store``);
stream state and viewer counts are not in Redis: they are in the database.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from onair.redis import RedisKeys

HEARTBEAT_SECONDS = 0.5
WORKER_TTL_SECONDS = 2.5
_GONE_CLAIM_SECONDS = 60
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


class WorkerDirectory(RedisKeys):
    """The keys above, for one Redis connection pool per event loop."""

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

    async def gone_claimed(self, worker_id: str) -> bool:
        """Whether a worker has claimed ``worker_id``'s announcement."""
        return bool(await self._redis.exists(f"{self._prefix}gone:{worker_id}"))

    async def forget(self, worker_id: str) -> list[str]:
        """Drop a dead worker; returns the streams it had routers for."""
        key = f"{self._prefix}worker:{worker_id}:streams"
        streams = await self._members(key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(key)
            pipe.srem(f"{self._prefix}workers", worker_id)
            await pipe.execute()
        return streams

    async def leave(self, worker_id: str) -> list[str]:
        """A worker stopping with no live worker left to announce it: out of ``workers``,
        its origins cleared; listed in ``left`` if it held streams. Returns them."""
        streams_key = f"{self._prefix}worker:{worker_id}:streams"
        streams = await self._members(streams_key)
        origins = [s for s in streams if await self.origin(s) == worker_id]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.srem(f"{self._prefix}workers", worker_id)
            for stream_id in origins:
                pipe.delete(f"{self._prefix}origin:{stream_id}")
            if origins:
                pipe.sadd(f"{self._prefix}worker:{worker_id}:origins", *origins)
            if streams:
                pipe.sadd(f"{self._prefix}left", worker_id)
            await pipe.execute()
        return streams

    async def take_left(self) -> list[tuple[str, list[str], set[str]]]:
        """The left workers this caller claims (each once in the cluster), forgotten:
        each one's id, streams and the streams it was the origin of."""
        taken = []
        for worker_id in await self._members(f"{self._prefix}left"):
            if not await self._redis.srem(f"{self._prefix}left", worker_id):
                continue  # another worker took it
            origins_key = f"{self._prefix}worker:{worker_id}:origins"
            origins = set(await self._members(origins_key))
            await self._redis.delete(origins_key)
            taken.append((worker_id, await self.forget(worker_id), origins))
        return taken

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
