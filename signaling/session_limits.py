"""How many SFU peer sessions a process takes: per client address, per stream, in all.

A session here is one SFU peer connection (a WHEP or watch-page viewer, a WHIP or studio
publisher), from its offer until the SFU reports it gone, connected or not. The gateway of
the process holding the peers (daphne in the embedded default, each ``runsfu`` worker in
cluster mode) admits each one before negotiating, so refusals cost no sockets:

- ``MAX_SESSIONS_PER_ADDRESS``: one client address's sessions → ``429 too_many_sessions``;
- ``MAX_VIEWERS_PER_STREAM``: one stream's viewers → ``503 stream_full``;
- ``MAX_SESSIONS``: the process's sessions → ``503 server_full``;
- ``MAX_WEBSOCKETS``: the process's open WebSockets (studio and watch pages, with or
  without a session) → ``error server_full``, close ``4503``.

The two defaults split the process's file descriptors (``RLIMIT_NOFILE`` less
``RESERVED_FDS``) so that both caps full at once still leave the reserve: each session
place holds a UDP socket per host address the SFU gathers on (none with ``UDP_MUX_PORT``:
the process's one shared socket is in the reserve), plus one per TURN server, and its
client's TCP connection, and comes paired with one WebSocket place.
"""

from __future__ import annotations

import math
import resource
import uuid
from collections import Counter
from dataclasses import dataclass

from aioice.ice import get_host_addresses

from onair.conf import onair_settings
from onair.exceptions import ServiceUnavailableError, TooManyRequestsError
from signaling.ice import PeerRole, ice_servers

# Descriptors kept for everything but sessions and WebSockets: listening sockets, the
# database (a SQLite connection per thread), Redis, log files, aiortc's and the C loop's
# own, and the plain HTTP requests of legitimate pages and viewers.
RESERVED_FDS = 256
RETRY_AFTER_SECONDS = 30


def fds_per_session(*, turn_servers: int = 0) -> int:
    """File descriptors one peer session costs: its ICE sockets and its client's TCP
    connection (the WebSocket, or the WHEP/WHIP requests' keep-alive)."""
    if onair_settings().ice.udp_mux_port:
        return turn_servers + 1
    return len(get_host_addresses(use_ipv4=True, use_ipv6=True)) + turn_servers + 1


def turn_servers_configured() -> int:
    """TURN servers the SFU gathers through: each adds a socket to every session."""
    return sum(
        url.startswith(("turn:", "turns:"))
        for server in ice_servers(user=PeerRole.SFU.value)
        for url in server.urls
    )


def max_sessions_default(*, turn_servers: int = 0) -> int:
    """The default of both ``MAX_SESSIONS`` and ``MAX_WEBSOCKETS``: as many session places,
    each with a WebSocket place, as ``RLIMIT_NOFILE``'s soft limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max((soft - RESERVED_FDS) // (fds_per_session(turn_servers=turn_servers) + 1), 1)


def max_websockets() -> int:
    """The process's cap on open WebSockets."""
    return onair_settings().max_websockets or max_sessions_default(
        turn_servers=turn_servers_configured()
    )


@dataclass(frozen=True)
class SessionCaps:
    """0 means no cap of that kind."""

    per_address: int
    per_stream: int
    total: int
    retry_after_seconds: int  # for a 429: by then a session that never connects is gone

    @classmethod
    def from_settings(cls, *, turn_servers: int = 0) -> SessionCaps:
        conf = onair_settings()
        return cls(
            per_address=conf.max_sessions_per_address,
            per_stream=conf.max_viewers_per_stream,
            total=conf.max_sessions or max_sessions_default(turn_servers=turn_servers),
            retry_after_seconds=max(math.ceil(conf.connect_timeout_seconds), 1),
        )


@dataclass
class _Held:
    address: str | None
    stream_id: str | None  # a viewer's stream; None for a publisher


class SessionLimits:
    """The sessions a process holds, and the caps on them."""

    def __init__(self, caps: SessionCaps) -> None:
        self.caps = caps
        self._held: dict[str, _Held] = {}
        self._by_address: Counter[str] = Counter()
        self._by_stream: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._held)

    def admit(self, *, address: str | None, viewer_of: str | None = None) -> str:
        """Hold a place for a new session from ``address`` (a viewer of stream
        ``viewer_of``, or a publisher); returns its key. Raises ``TooManyRequestsError``
        or ``ServiceUnavailableError`` when a cap is reached."""
        caps = self.caps
        if (
            address is not None
            and caps.per_address
            and self._by_address[address] >= (caps.per_address)
        ):
            raise TooManyRequestsError(
                f"This address has {caps.per_address} sessions open, the most it may; "
                "close one, or wait for unconnected ones to expire.",
                code="too_many_sessions",
                retry_after=caps.retry_after_seconds,
            )
        if (
            viewer_of is not None
            and caps.per_stream
            and self._by_stream[viewer_of] >= (caps.per_stream)
        ):
            raise ServiceUnavailableError(
                "This broadcast has as many viewers as it can take; try again later.",
                code="stream_full",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if caps.total and len(self._held) >= caps.total:
            raise ServiceUnavailableError(
                "The server has as many sessions as it can take; try again later.",
                code="server_full",
                retry_after=RETRY_AFTER_SECONDS,
            )
        key = uuid.uuid4().hex
        self._held[key] = _Held(address=address, stream_id=viewer_of)
        if address is not None:
            self._by_address[address] += 1
        if viewer_of is not None:
            self._by_stream[viewer_of] += 1
        return key

    def rekey(self, key: str, session_id: str) -> None:
        """The admitted session exists now, as ``session_id`` (what its end will name)."""
        held = self._held.pop(key, None)
        if held is not None:
            self._held[session_id] = held

    def release(self, key: str) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        if held.address is not None:
            self._drop(self._by_address, held.address)
        if held.stream_id is not None:
            self._drop(self._by_stream, held.stream_id)

    @staticmethod
    def _drop(counter: Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]
