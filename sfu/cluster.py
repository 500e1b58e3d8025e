"""One process's routers as a node of a cluster: origins piping broadcasts to edges, edge
routers fed by an origin.

Whatever runs the node (a cluster worker) places publishers and viewers, and carries the
few messages between nodes: an edge's pipe address to the origin (``open_edge`` →
``open_pipe``), the origin's address and tracks back (``connect_edge``), and the tracks
again whenever they change (``on_tracks`` → ``edge_tracks``). Tracks travel as JSON-able
lists. The pipes themselves are ``sfu.pipe``'s; this module keeps which pipe goes where,
what they count, and which edges have had no viewers for a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sfu.pipe import Address, EdgePipe, EdgeRouter, OriginPipe, decode_tracks, encode_tracks
from sfu.registry import RouterRegistry

EncodedTracks = list[dict[str, Any]]


@dataclass(frozen=True)
class NodeLoad:
    """What a node holds and has carried.

    ``packets``: received so far, from publishers (origin routers) and pipes (edges);
    ``producers``: stream id → packets received from its publisher (origin routers);
    ``pipes_in``: stream id → the edge end's counters and its ``origin``;
    ``pipes_out``: stream id → edge id → the origin end's counters;
    ``publishing``: the streams whose publisher is here, connected or in its grace.
    """

    viewers: int
    publishers: int
    routers: int
    packets: int
    producers: dict[str, int]
    pipes_in: dict[str, dict[str, Any]]
    pipes_out: dict[str, dict[str, dict[str, int]]]
    publishing: list[str]


class ClusterNode:
    """The routers of ``routers`` as one cluster node; pipes bind on ``host``."""

    def __init__(self, routers: RouterRegistry, *, host: str) -> None:
        self.routers = routers
        self.host = host
        self._pipes_out: dict[tuple[str, str], OriginPipe] = {}  # by (stream id, edge id)
        self._edge_origins: dict[str, str] = {}  # stream id → the origin node feeding it
        self._idle_since: dict[str, float] = {}  # edge stream id → since when without viewers

    # --- what it holds -----------------------------------------------------------------

    def viewer_count(self) -> int:
        return sum(len(router.viewers) for router in self.routers.routers)

    def live_peers(self) -> tuple[list[str], list[str]]:
        """The ids of its publishers (current and pending) and of its viewers."""
        publishers: list[str] = []
        viewers: list[str] = []
        for router in self.routers.routers:
            for publisher in (router.publisher, router.pending_publisher):
                if publisher is not None:
                    publishers.append(publisher.id)
            viewers.extend(viewer.id for viewer in router.viewers)
        return publishers, viewers

    def load(self) -> NodeLoad:
        routers = self.routers.routers
        producers = {
            r.id: sum(p.packets_received for p in r.producers)
            for r in routers
            if not isinstance(r, EdgeRouter)
        }
        edges = [r for r in routers if isinstance(r, EdgeRouter)]
        pipes_in: dict[str, dict[str, Any]] = {
            r.id: {"origin": self._edge_origins.get(r.id, ""), **_edge_counters(r.pipe)}
            for r in edges
        }
        pipes_out: dict[str, dict[str, dict[str, int]]] = {}
        for (stream_id, edge_id), pipe in self._pipes_out.items():
            stats = pipe.stats()
            pipes_out.setdefault(stream_id, {})[edge_id] = {
                "packets": stats.packets,
                "retransmitted": stats.retransmitted,
                "keyframe_requests": stats.keyframe_requests,
            }
        return NodeLoad(
            viewers=self.viewer_count(),
            publishers=sum(1 for r in routers if r.publisher is not None),
            routers=len(routers),
            packets=sum(producers.values()) + sum(r.pipe.stats().packets for r in edges),
            producers=producers,
            pipes_in=pipes_in,
            pipes_out=pipes_out,
            publishing=[r.id for r in routers if r.publisher is not None],
        )

    # --- as an edge ----------------------------------------------------------------------

    def is_edge(self, stream_id: str) -> bool:
        return isinstance(self.routers.get(stream_id), EdgeRouter)

    def edge_origin(self, stream_id: str) -> str | None:
        """The origin feeding this node's edge router of the stream; None if it has none."""
        return self._edge_origins.get(stream_id) if self.is_edge(stream_id) else None

    def edges_from(self, origin_id: str) -> list[str]:
        """The streams this node is an edge of, fed by ``origin_id``."""
        return [s for s, origin in self._edge_origins.items() if origin == origin_id]

    async def open_edge(self, stream_id: str, origin_id: str) -> Address:
        """Become an edge for the stream, fed from ``origin_id``: an edge router whose
        pipe is bound and waiting; returns the pipe's address, for the origin's
        ``open_pipe``. The stream must have no router here."""
        pipe = await EdgePipe.open(host=self.host)
        self.routers.add(EdgeRouter(self.routers.options, router_id=stream_id, pipe=pipe))
        self._edge_origins[stream_id] = origin_id
        return pipe.address

    async def connect_edge(self, stream_id: str, origin: Address, tracks: EncodedTracks) -> None:
        """The origin's pipe is open at ``origin`` with ``tracks``: the edge's viewers get
        them."""
        router = self.routers.get(stream_id)
        if isinstance(router, EdgeRouter):
            router.pipe.connect(origin)
            await router.set_tracks(decode_tracks(tracks))

    async def edge_tracks(self, stream_id: str, tracks: EncodedTracks) -> None:
        """The origin's tracks changed (its publisher did)."""
        router = self.routers.get(stream_id)
        if isinstance(router, EdgeRouter):
            await router.set_tracks(decode_tracks(tracks))

    def idle_edges(self, *, idle_seconds: float) -> list[tuple[str, str]]:
        """``(stream id, origin id)`` of the edges without viewers for ``idle_seconds``
        (each call notes which edges have none since when)."""
        now = time.monotonic()
        idle: list[tuple[str, str]] = []
        for router in self.routers.routers:
            if not isinstance(router, EdgeRouter) or router.viewers:
                self._idle_since.pop(router.id, None)
                continue
            if now - self._idle_since.setdefault(router.id, now) >= idle_seconds:
                idle.append((router.id, self._edge_origins.get(router.id, "")))
        return idle

    # --- as an origin --------------------------------------------------------------------

    async def open_pipe(
        self,
        stream_id: str,
        edge_id: str,
        *,
        remote: Address,
        on_tracks: Callable[[EncodedTracks], None],
    ) -> tuple[Address, EncodedTracks]:
        """Pipe the stream (its router, created if need be) to the edge ``edge_id`` whose
        pipe is at ``remote``, replacing a pipe to it there was; returns this end's address
        and the current tracks. ``on_tracks`` hears every later change of tracks."""
        router = self.routers.get_or_create(stream_id)
        self.close_pipe(stream_id, edge_id)
        pipe = await OriginPipe.open(
            router,
            remote=remote,
            host=self.host,
            on_tracks=lambda tracks: on_tracks(encode_tracks(tracks)),
        )
        self._pipes_out[(stream_id, edge_id)] = pipe
        return pipe.address, encode_tracks(pipe.tracks())

    def close_pipe(self, stream_id: str, edge_id: str) -> None:
        pipe = self._pipes_out.pop((stream_id, edge_id), None)
        if pipe is not None:
            pipe.close()

    def close_pipes_to(self, edge_id: str) -> None:
        """The node ``edge_id`` is gone: no more pipes to it."""
        for stream_id, edge in list(self._pipes_out):
            if edge == edge_id:
                self.close_pipe(stream_id, edge)

    # --- letting go ----------------------------------------------------------------------

    def forget(self, stream_id: str) -> None:
        """The stream's router here is closing: its pipes out and edge bookkeeping go."""
        self._edge_origins.pop(stream_id, None)
        self._idle_since.pop(stream_id, None)
        for stream, edge in [key for key in self._pipes_out if key[0] == stream_id]:
            self.close_pipe(stream, edge)

    def close_pipes(self) -> None:
        """Close every pipe out (the node is stopping)."""
        for stream_id, edge_id in list(self._pipes_out):
            self.close_pipe(stream_id, edge_id)

    def reset(self) -> None:
        """Forget every pipe and edge (the routers are being closed)."""
        self.close_pipes()
        self._edge_origins.clear()


def _edge_counters(pipe: EdgePipe) -> dict[str, int]:
    stats = pipe.stats()
    return {
        "packets": stats.packets,
        "duplicates": stats.duplicates,
        "nacks": stats.nacks,
        "keyframe_requests": stats.keyframe_requests,
    }
