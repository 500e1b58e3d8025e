"""Where WHIP/WHEP session resources are kept: token → stream, SFU peer, ETag.

Embedded mode (one process holds the SFU and every session): a dict in memory,
``MemorySessionStore``. Cluster mode: Redis (``RedisSessionStore``, keys in
``signaling.sfu_registry``), so a ``PATCH`` or ``DELETE`` reaching any daphne process finds
the session. A Redis record expires ``SESSION_TTL_SECONDS`` after the SFU worker holding
its peer last refreshed it (``SfuWorker``): a session whose worker died goes away by itself
(sooner: the worker that announces the death ends them).

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
from enum import StrEnum
from typing import Protocol

from broadcast.models import Stream
from signaling.sfu_cluster import cluster_mode
from signaling.sfu_registry import ENDED_SESSION_TTL_SECONDS, SfuRegistry

MAX_ENDED_SESSIONS = 10_000


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

    @property
    def path(self) -> str:
        return f"/{self.kind.value}/{self.slug}/{self.token}"

    @property
    def stream(self) -> Stream:
        """The stream, for the gateway's calls (they only need its primary key)."""
        return Stream(pk=self.stream_id, slug=self.slug)

    def to_json(self) -> str:
        """The record, without ``ended``: where the record is kept says that."""
        fields = asdict(self)
        del fields["ended"]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, raw: str) -> HttpSession:
        fields = json.loads(raw)
        return cls(**{**fields, "kind": SessionKind(fields["kind"])})


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

    async def discard(self, token: str) -> bool:
        return self._ended.pop(token, None) is not None

    def _drop_expired(self) -> None:
        now = time.monotonic()
        while self._ended and next(iter(self._ended.values()))[0] <= now:
            self._ended.popitem(last=False)


class RedisSessionStore:
    def __init__(self, registry: SfuRegistry) -> None:
        self._registry = registry

    async def put(self, session: HttpSession) -> None:
        await self._registry.session_put(
            token=session.token,
            peer=peer_key(session.kind, session.sfu_id),
            record=session.to_json(),
        )

    async def get(self, token: str) -> HttpSession | None:
        found = await self._registry.session_lookup(token)
        if found is None:
            return None
        record, ended = found
        return replace(HttpSession.from_json(record), ended=ended)

    async def with_key(self, key_id: int) -> list[HttpSession]:
        sessions = [HttpSession.from_json(record) for record in await self._registry.sessions()]
        return [session for session in sessions if session.key_id == key_id]

    async def get_peer(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        record = await self._registry.session_get_peer(peer_key(kind, sfu_id))
        return HttpSession.from_json(record) if record is not None else None

    async def update(self, session: HttpSession) -> bool:
        return await self._registry.session_replace(token=session.token, record=session.to_json())

    async def pop(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        record = await self._registry.session_pop(peer_key(kind, sfu_id))
        return HttpSession.from_json(record) if record is not None else None

    async def end(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        record = await self._registry.session_end(peer_key(kind, sfu_id))
        return HttpSession.from_json(record) if record is not None else None

    async def end_worker(self, worker_id: str) -> list[HttpSession]:
        records = await self._registry.worker_sessions_end(worker_id)
        return [HttpSession.from_json(record) for record in records]

    async def discard(self, token: str) -> bool:
        return await self._registry.session_discard_ended(token)


def _process_store() -> SessionStore:
    return (
        RedisSessionStore(SfuRegistry.from_settings()) if cluster_mode() else MemorySessionStore()
    )


session_store = _process_store()
