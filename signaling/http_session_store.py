"""Where WHIP/WHEP session resources are kept: token → stream, SFU peer, ETag.

Embedded mode (one process holds the SFU and every session): a dict in memory,
``MemorySessionStore``. Cluster mode: Redis (``RedisSessionStore``), so a ``PATCH`` or
``DELETE`` reaching any daphne process finds the session. A Redis record expires
``SESSION_TTL_SECONDS`` after the SFU worker holding its peer last refreshed it
(``refresh``): a session whose worker died goes away by itself (sooner: the worker that
announces the death ends them).

Redis keys (under ``<prefix>:sfu:``, the channel layer's prefix, ``onair`` by default)::

    http:<token>            string  a session resource (JSON), expiring SESSION_TTL_SECONDS
                                    after its worker last saw its peer
    http-peer:<kind>:<sfu id>
                            string  the token of the session of that SFU peer (same TTL)
    http-ended:<token>      string  a session whose peer is gone (moved from http:<token>),
                                    kept ENDED_SESSION_TTL_SECONDS so a late DELETE finds it

A session whose peer went away without a ``DELETE`` is kept as ended for
``ENDED_SESSION_TTL_SECONDS`` (in memory at most ``MAX_ENDED_SESSIONS`` of them, the oldest
dropped first), so a client that closes its peer connection before its ``DELETE`` gets
``200``, not ``404``.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from enum import StrEnum
from typing import Protocol

from broadcast.models import Stream
from onair.conf import cluster_mode
from onair.redis import RedisKeys

MAX_ENDED_SESSIONS = 10_000
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


class SessionKind(StrEnum):
    WHIP = "whip"
    WHEP = "whep"


@dataclass
class HttpSession:
    """One WHIP publisher or WHEP viewer, as its session resource knows it."""

    token: str
    kind: SessionKind
    stream_id: int
    slug: str
    sfu_id: str  # the SFU's publisher session id or viewer id
    answer_sdp: str
    etag: str
    remote_ufrag: str | None
    viewer_record_id: int | None = None  # a WHEP viewer's ViewerSession, once connected
    user_id: int | None = None  # who watches (a logged-in WHEP viewer), for its ViewerSession
    key_id: int | None = None  # the stream key a WHIP publisher was let in with
    ended: bool = False  # its peer is gone: kept a while only to answer a late DELETE
    log_id: str = ""  # its public id in the logs (onair.logcontext), never its token

    @property
    def path(self) -> str:
        return f"/{self.kind.value}/{self.slug}/{self.token}"

    @property
    def stream(self) -> Stream:
        """The stream as far as the session knows it (its primary key and slug), for the
        services and messages that take a ``Stream`` and read it afresh."""
        return Stream(pk=self.stream_id, slug=self.slug)

    def to_json(self) -> str:
        """The record, without ``ended``: where the record is kept says that."""
        fields = asdict(self)
        del fields["ended"]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, raw: str) -> HttpSession:
        """A record another version may have written: fields it has that this one has not
        are left out, and this one's missing there take their defaults."""
        known = {f.name for f in dataclass_fields(cls)}
        stored = {name: value for name, value in json.loads(raw).items() if name in known}
        return cls(**{**stored, "kind": SessionKind(stored["kind"])})


def peer_key(kind: SessionKind, sfu_id: str) -> str:
    return f"{kind.value}:{sfu_id}"


class SessionStore(Protocol):
    async def put(self, session: HttpSession) -> None:
        """Add a session, or save a changed one."""

    async def get(self, token: str) -> HttpSession | None:
        """The session, live or ended (``ended``)."""

    async def get_peer(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        """The session of an SFU peer, if it is still there."""

    async def update(self, session: HttpSession) -> bool:
        """Save a changed session only if it is still there (not popped meanwhile)."""

    async def pop(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        """Remove the session of an SFU peer; it is returned to one caller only."""

    async def end(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        """The SFU peer is gone: keep its session as ended for a while. Returned to one
        caller only, as by ``pop``, with which it competes."""

    async def end_worker(self, worker_id: str) -> list[HttpSession]:
        """End the sessions of a dead cluster worker's peers; those this caller ended."""

    async def discard(self, token: str) -> bool:
        """Forget an ended session; True for the one caller that did."""

    async def with_key(self, key_id: int) -> list[HttpSession]:
        """The sessions a stream key let in (a rare scan: the key was revoked)."""

    async def refresh(self, peers: list[tuple[SessionKind, str]]) -> None:
        """The SFU peers ``(kind, sfu id)`` are alive: keep their sessions from expiring."""


class MemorySessionStore:
    def __init__(
        self,
        *,
        ended_ttl: float = ENDED_SESSION_TTL_SECONDS,
        max_ended: int = MAX_ENDED_SESSIONS,
    ) -> None:
        self._sessions: dict[str, HttpSession] = {}
        self._tokens_by_peer: dict[str, str] = {}
        self._ended: OrderedDict[str, tuple[float, HttpSession]] = OrderedDict()  # oldest first
        self._ended_ttl = ended_ttl
        self._max_ended = max_ended

    async def put(self, session: HttpSession) -> None:
        self._sessions[session.token] = session
        self._tokens_by_peer[peer_key(session.kind, session.sfu_id)] = session.token

    async def get(self, token: str) -> HttpSession | None:
        self._drop_expired()
        session = self._sessions.get(token)
        if session is None and token in self._ended:
            session = self._ended[token][1]
        return session

    async def with_key(self, key_id: int) -> list[HttpSession]:
        return [session for session in self._sessions.values() if session.key_id == key_id]

    async def get_peer(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        token = self._tokens_by_peer.get(peer_key(kind, sfu_id))
        return self._sessions.get(token) if token is not None else None

    async def update(self, session: HttpSession) -> bool:
        if session.token not in self._sessions:
            return False
        self._sessions[session.token] = session
        return True

    async def pop(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        token = self._tokens_by_peer.pop(peer_key(kind, sfu_id), None)
        return self._sessions.pop(token, None) if token is not None else None

    async def end(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        session = await self.pop(kind=kind, sfu_id=sfu_id)
        if session is not None:
            self._drop_expired()
            self._ended[session.token] = (
                time.monotonic() + self._ended_ttl,
                replace(session, ended=True, answer_sdp=""),  # small: only DELETE finds it
            )
            while len(self._ended) > self._max_ended:
                self._ended.popitem(last=False)
        return session

    async def end_worker(self, worker_id: str) -> list[HttpSession]:
        return []  # one process, no workers

    async def refresh(self, peers: list[tuple[SessionKind, str]]) -> None:
        pass  # nothing expires but ended sessions

    async def discard(self, token: str) -> bool:
        return self._ended.pop(token, None) is not None

    def _drop_expired(self) -> None:
        now = time.monotonic()
        while self._ended and next(iter(self._ended.values()))[0] <= now:
            self._ended.popitem(last=False)


class RedisSessionStore(RedisKeys):
    """The sessions in Redis (the keys above), for one connection pool per event loop."""

    async def put(self, session: HttpSession) -> None:
        peer = peer_key(session.kind, session.sfu_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(
                f"{self._prefix}http:{session.token}", session.to_json(), ex=SESSION_TTL_SECONDS
            )
            pipe.set(f"{self._prefix}http-peer:{peer}", session.token, ex=SESSION_TTL_SECONDS)
            await pipe.execute()

    async def get(self, token: str) -> HttpSession | None:
        live, ended = await self._redis.mget(
            [f"{self._prefix}http:{token}", f"{self._prefix}http-ended:{token}"]
        )
        if live is not None:
            return HttpSession.from_json(str(live))
        return replace(HttpSession.from_json(str(ended)), ended=True) if ended is not None else None

    async def with_key(self, key_id: int) -> list[HttpSession]:
        keys = [key async for key in self._redis.scan_iter(match=f"{self._prefix}http:*")]
        records = await self._redis.mget(keys) if keys else []
        sessions = [HttpSession.from_json(str(record)) for record in records if record is not None]
        return [session for session in sessions if session.key_id == key_id]

    async def get_peer(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        token = await self._redis.get(f"{self._prefix}http-peer:{peer_key(kind, sfu_id)}")
        if token is None:
            return None
        record = await self._redis.get(f"{self._prefix}http:{token!s}")
        return HttpSession.from_json(str(record)) if record is not None else None

    async def update(self, session: HttpSession) -> bool:
        """Atomic: ``SET XX``, keeping the TTL."""
        return bool(
            await self._redis.set(
                f"{self._prefix}http:{session.token}", session.to_json(), xx=True, keepttl=True
            )
        )

    async def pop(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        token = await self._redis.getdel(f"{self._prefix}http-peer:{peer_key(kind, sfu_id)}")
        if token is None:
            return None
        record = await self._redis.getdel(f"{self._prefix}http:{token!s}")
        return HttpSession.from_json(str(record)) if record is not None else None

    async def end(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        return await self._end_peer(peer_key(kind, sfu_id))

    async def _end_peer(self, peer: str) -> HttpSession | None:
        """Atomic (a script), as ``pop``, with which it competes."""
        record = await self._redis.eval(
            _END_SESSION,
            1,
            f"{self._prefix}http-peer:{peer}",
            f"{self._prefix}http:",
            f"{self._prefix}http-ended:",
            ENDED_SESSION_TTL_SECONDS,
        )
        return HttpSession.from_json(str(record)) if record is not None else None

    async def end_worker(self, worker_id: str) -> list[HttpSession]:
        """The peers' ids carry the worker's id, and worker ids are plain ``w<hex>``: a
        scan, for a rare event."""
        peers = [
            str(key).removeprefix(f"{self._prefix}http-peer:")
            async for key in self._redis.scan_iter(
                match=f"{self._prefix}http-peer:*:{worker_id}.*", count=1000
            )
        ]
        sessions = [await self._end_peer(peer) for peer in peers]
        return [session for session in sessions if session is not None]

    async def discard(self, token: str) -> bool:
        return bool(await self._redis.delete(f"{self._prefix}http-ended:{token}"))

    async def refresh(self, peers: list[tuple[SessionKind, str]]) -> None:
        if peers:
            await self._redis.eval(
                _REFRESH_SESSIONS,
                len(peers),
                *[f"{self._prefix}http-peer:{peer_key(kind, sfu_id)}" for kind, sfu_id in peers],
                SESSION_TTL_SECONDS,
                f"{self._prefix}http:",
            )


def _process_store() -> SessionStore:
    return RedisSessionStore.from_settings() if cluster_mode() else MemorySessionStore()


session_store = _process_store()
