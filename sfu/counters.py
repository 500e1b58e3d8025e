"""What the SFU of this process has done since it started, as plain counters.

Each producer and down track counts its own packets (attributes bumped on the packet path,
the C loop's read back when asked). ``totals(routers)`` adds up those of the routers given
and those of every producer and down track that has closed in this process (each hands its
counts to ``retire`` once, as it closes), so every sum only grows while the process runs: a
monitoring system reads them as counters at scrape time (``signaling.gateway.metrics``) and
the packet path does no extra work for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Protocol


@dataclass
class KindTotals:
    """One media kind's counters (``audio`` or ``video``). ``keyframe_requests`` are those
    asked of producers (viewers' PLI/FIR, joins, layer switches, the recorder), of which
    ``keyframe_join_requests`` by a joining viewer's down track; ``keyframe_requests_sent``
    the PLIs that went to publishers once coalesced (``sfu.keyframe``)."""

    packets_received: int = 0
    bytes_received: int = 0
    duplicates_received: int = 0
    keyframes_received: int = 0
    keyframe_requests: int = 0
    keyframe_join_requests: int = 0
    keyframe_requests_sent: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    nacks_received: int = 0
    retransmitted_packets: int = 0
    nack_misses: int = 0
    nacks_refused: int = 0
    keyframe_requests_received: int = 0
    dropped_keyframe_gate: int = 0
    dropped_pacer: int = 0
    dropped_socket: int = 0
    native_packets_sent: int = 0
    native_bytes_sent: int = 0
    native_handoffs: int = 0

    def add(self, other: KindTotals) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


Totals = dict[str, KindTotals]  # by media kind


class _Counted(Protocol):
    """A producer or a down track (structural: ``sfu.producer`` imports this module)."""

    @property
    def kind(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def totals(self) -> KindTotals: ...


class _Publisher(Protocol):
    @property
    def producers(self) -> Iterable[_Counted]: ...


class _Viewer(Protocol):
    @property
    def down_tracks(self) -> Iterable[_Counted]: ...


class _Router(Protocol):
    @property
    def producers(self) -> Iterable[_Counted]: ...
    @property
    def pending_publisher(self) -> _Publisher | None: ...
    @property
    def viewers(self) -> Iterable[_Viewer]: ...


_retired: Totals = {}


def retire(kind: str, counts: KindTotals) -> None:
    """A producer or down track closing: its counts stay in this process's totals."""
    _retired.setdefault(kind, KindTotals()).add(counts)


def totals(routers: Iterable[_Router]) -> Totals:
    """Everything this process counted: the closed producers' and down tracks' counts, and
    those of the open ones in ``routers`` (a closed one is in the first only)."""
    summed: Totals = {}
    for kind, counts in _retired.items():
        summed.setdefault(kind, KindTotals()).add(counts)
    for router in routers:
        producers = list(router.producers)
        pending = router.pending_publisher
        if pending is not None:
            producers.extend(pending.producers)
        for producer in producers:
            if not producer.closed:
                summed.setdefault(producer.kind, KindTotals()).add(producer.totals())
        for viewer in router.viewers:
            for down_track in viewer.down_tracks:
                if not down_track.closed:
                    summed.setdefault(down_track.kind, KindTotals()).add(down_track.totals())
    return summed
