"""Where WHIP/WHEP session resources are kept: token → stream, SFU peer, ETag.

Embedded mode (one process holds the SFU and every session): a dict in memory,
``MemorySessionStore``. Cluster mode: Redis (``RedisSessionStore``, keys in
``signaling.sfu_registry``), so a ``PATCH`` or ``DELETE`` reaching any daphne process finds
the session. A Redis record expires ``SESSION_TTL_SECONDS`` after the SFU worker holding
its peer last refreshed it (``SfuWorker``): a session whose worker died goes away by itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Protocol

from broadcast.models import Stream
from signaling.sfu_cluster import cluster_mode
from signaling.sfu_registry import SfuRegistry


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

    @property
    def path(self) -> str:
        return f"/{self.kind.value}/{self.slug}/{self.token}"

    @property
    def stream(self) -> Stream:
        """The stream, for the gateway's calls (they only need its primary key)."""
        return Stream(pk=self.stream_id, slug=self.slug)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> HttpSession:
        fields = json.loads(raw)
        return cls(**{**fields, "kind": SessionKind(fields["kind"])})


def peer_key(kind: SessionKind, sfu_id: str) -> str:
    return f"{kind.value}:{sfu_id}"


class SessionStore(Protocol):
    async def put(self, session: HttpSession) -> None:
        """Add a session, or save a changed one."""

    async def get(self, token: str) -> HttpSession | None: ...

    async def get_peer(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        """The session of an SFU peer, if it is still there."""

    async def update(self, session: HttpSession) -> bool:
        """Save a changed session only if it is still there (not popped meanwhile)."""

    async def pop(self, *, kind: SessionKind, sfu_id: str) -> HttpSession | None:
        """Remove the session of an SFU peer; it is returned to one caller only."""

    async def with_key(self, key_id: int) -> list[HttpSession]:
        """The sessions a stream key let in (a rare scan: the key was revoked)."""


class MemorySessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, HttpSession] = {}
        self._tokens_by_peer: dict[str, str] = {}

    async def put(self, session: HttpSession) -> None:
        self._sessions[session.token] = session
        self._tokens_by_peer[peer_key(session.kind, session.sfu_id)] = session.token

    async def get(self, token: str) -> HttpSession | None:
        return self._sessions.get(token)

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
        record = await self._registry.session_get(token)
        return HttpSession.from_json(record) if record is not None else None

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


def _process_store() -> SessionStore:
    return (
        RedisSessionStore(SfuRegistry.from_settings()) if cluster_mode() else MemorySessionStore()
    )


session_store = _process_store()
