"""The SFU's Prometheus metrics: read from its routers and counters when scraped.

A process serving media (daphne in embedded mode, each ``runsfu`` worker) registers
``SfuCollector`` in prometheus-client's default registry; its ``collect`` runs on the
process's event loop (the ``/metrics`` view, ``onair.metrics.serve_metrics``), where it reads
the routers of every embedded gateway of the process and ``sfu.counters``' totals. The
packet path counts as it always has, on its own objects; nothing here runs per packet. The
two histograms are observed once per viewer, from the SFU's events (``sfu_event``).
docs/METRICS.md lists every metric.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu import Router, SfuEvent, ViewerConnected, ViewerFirstFrame, counters, native
from sfu.pipe import EdgeRouter

if TYPE_CHECKING:
    from signaling.gateway.embedded import EmbeddedGateway

# From a viewer's session (its offer or the server's) to the first keyframe sent to it:
# tens of milliseconds on a LAN, seconds through TURN or a slow keyframe.
VIEWER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)

viewer_join_seconds = Histogram(
    "onair_sfu_viewer_join_seconds",
    "From a viewer's session being made to its connection being up (ICE and DTLS).",
    buckets=VIEWER_BUCKETS,
    registry=None,  # collected with the SFU's other metrics (SfuCollector)
)
viewer_first_frame_seconds = Histogram(
    "onair_sfu_viewer_first_frame_seconds",
    "From a viewer's session being made to the first video keyframe sent to it.",
    buckets=VIEWER_BUCKETS,
    registry=None,
)

PEER_STATES = ("new", "connecting", "connected", "disconnected", "failed", "closed")

# Each counter family: its name (without ``_total``), its help, and its samples per media
# kind: (labels beyond ``kind``, the count from a kind's ``sfu.counters.KindTotals``).
Sample = tuple[dict[str, str], Callable[[counters.KindTotals], int]]
_COUNTERS: tuple[tuple[str, str, tuple[Sample, ...]], ...] = (
    (
        "onair_sfu_received_packets",
        "RTP packets received from publishers.",
        (({}, lambda t: t.packets_received),),
    ),
    (
        "onair_sfu_received_bytes",
        "RTP payload bytes received from publishers.",
        (({}, lambda t: t.bytes_received),),
    ),
    (
        "onair_sfu_received_duplicate_packets",
        "RTP packets received again from publishers (not forwarded again).",
        (({}, lambda t: t.duplicates_received),),
    ),
    (
        "onair_sfu_keyframes_received",
        "Keyframes received from publishers.",
        (({}, lambda t: t.keyframes_received),),
    ),
    (
        "onair_sfu_forwarded_packets",
        "RTP packets forwarded to viewers (retransmissions not included).",
        (({}, lambda t: t.packets_sent),),
    ),
    (
        "onair_sfu_forwarded_bytes",
        "RTP bytes forwarded to viewers (retransmissions not included).",
        (({}, lambda t: t.bytes_sent),),
    ),
    (
        "onair_sfu_nacked_packets",
        "Sequence numbers viewers asked for again (RTCP NACK).",
        (({}, lambda t: t.nacks_received),),
    ),
    (
        "onair_sfu_retransmitted_packets",
        "Packets resent to viewers in answer to their NACKs.",
        (({}, lambda t: t.retransmitted_packets),),
    ),
    (
        "onair_sfu_nack_misses",
        "NACKed packets not resent: not forwarded yet, or too old.",
        (({}, lambda t: t.nack_misses),),
    ),
    (
        "onair_sfu_nacks_refused",
        "NACKed packets not resent: over the viewer's retransmission budget.",
        (({}, lambda t: t.nacks_refused),),
    ),
    (
        "onair_sfu_keyframe_requests_received",
        "Keyframe requests (RTCP PLI/FIR) received from viewers.",
        (({}, lambda t: t.keyframe_requests_received),),
    ),
    (
        "onair_sfu_keyframe_requests",
        "Keyframe requests asked of producers: by a joining viewer (join), or by viewers' "
        "PLI/FIR, layer switches and the recorder (other).",
        (
            ({"reason": "join"}, lambda t: t.keyframe_join_requests),
            ({"reason": "other"}, lambda t: t.keyframe_requests - t.keyframe_join_requests),
        ),
    ),
    (
        "onair_sfu_keyframe_requests_sent",
        "Keyframe requests (RTCP PLI) sent to publishers, once coalesced.",
        (({}, lambda t: t.keyframe_requests_sent),),
    ),
    (
        "onair_sfu_dropped_packets",
        "Packets not sent to a viewer: before its first keyframe (keyframe_gate), its "
        "pacer's queue full (pacer), its socket and the C loop's spill buffer full (socket).",
        (
            ({"reason": "keyframe_gate"}, lambda t: t.dropped_keyframe_gate),
            ({"reason": "pacer"}, lambda t: t.dropped_pacer),
            ({"reason": "socket"}, lambda t: t.dropped_socket),
        ),
    ),
    (
        "onair_sfu_native_forwarded_packets",
        "Of the packets forwarded, those the C loop sent.",
        (({}, lambda t: t.native_packets_sent),),
    ),
    (
        "onair_sfu_native_forwarded_bytes",
        "Of the bytes forwarded, those the C loop sent.",
        (({}, lambda t: t.native_bytes_sent),),
    ),
    (
        "onair_sfu_native_handoffs",
        "Times the C loop handed a viewer back to Python (its socket would block).",
        (({}, lambda t: t.native_handoffs),),
    ),
)

_gateways: weakref.WeakSet[EmbeddedGateway] = weakref.WeakSet()


def gateway_serves(gateway: EmbeddedGateway) -> None:
    """``gateway``'s routers are this process's SFU: export them."""
    _gateways.add(gateway)


def sfu_event(event: SfuEvent) -> None:
    """What the histograms take from the SFU's events (one per viewer)."""
    if isinstance(event, ViewerConnected):
        viewer_join_seconds.observe(event.seconds)
    elif isinstance(event, ViewerFirstFrame):
        viewer_first_frame_seconds.observe(event.seconds)


class SfuCollector(Collector):
    """The SFU's gauges and counters, read at scrape time; none while no embedded gateway
    serves in this process (daphne in cluster mode)."""

    def collect(self) -> Iterator[Metric]:
        gateways = list(_gateways)
        if not gateways:
            return
        routers = [
            router
            for gateway in gateways
            if (registry := gateway.registry) is not None
            for router in registry.routers_and_closing
        ]
        yield from sfu_families(routers)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected on demand only: never at registration


def sfu_families(routers: list[Router]) -> Iterator[Metric]:
    """Every SFU metric of ``routers`` and of what this process's SFU closed."""
    yield from _gauges(routers)
    yield from _counters(counters.totals(routers))
    yield from viewer_join_seconds.collect()
    yield from viewer_first_frame_seconds.collect()


def _gauges(routers: list[Router]) -> Iterator[Metric]:
    streams = GaugeMetricFamily(
        "onair_sfu_streams",
        "Broadcasts with a router here: origin (its publisher's) or edge (piped from it).",
        labels=["role"],
    )
    live = GaugeMetricFamily(
        "onair_sfu_live_streams", "Broadcasts whose publisher is here (connected or in its grace)."
    )
    publishers = GaugeMetricFamily(
        "onair_sfu_publishers", "Publisher sessions here, a pending takeover's included."
    )
    viewers = GaugeMetricFamily(
        "onair_sfu_viewers",
        "Viewer sessions (connected or not) by broadcast (stream id).",
        labels=["stream"],
    )
    peers = GaugeMetricFamily(
        "onair_sfu_peer_connections",
        "Peer connections by role and state (RTCPeerConnection.connectionState).",
        labels=["role", "state"],
    )
    targets = GaugeMetricFamily(
        "onair_sfu_native_targets", "Viewer tracks the C loop forwards now."
    )
    available = GaugeMetricFamily(
        "onair_sfu_native_available", "1 when the C forwarding loop is built and loaded."
    )
    roles: Counter[str] = Counter()
    states: Counter[tuple[str, str]] = Counter()
    live_count = publisher_count = target_count = 0
    for router in routers:
        edge = isinstance(router, EdgeRouter)
        roles["edge" if edge else "origin"] += 1
        if router.publisher is not None and not edge:
            live_count += 1
        for publisher in (router.publisher, router.pending_publisher):
            if publisher is not None:
                publisher_count += 1
                states["publisher", publisher.connection_state] += 1
        viewers.add_metric([router.id], len(router.viewers))
        for viewer in router.viewers:
            states["viewer", viewer.connection_state] += 1
            target_count += sum(t.native_target is not None for t in viewer.down_tracks)
    for role in ("origin", "edge"):
        streams.add_metric([role], roles[role])
    live.add_metric([], live_count)
    publishers.add_metric([], publisher_count)
    for role in ("publisher", "viewer"):
        for state in PEER_STATES:
            peers.add_metric([role, state], states[role, state])
    targets.add_metric([], target_count)
    available.add_metric([], int(native.available()))
    yield from (streams, live, publishers, viewers, peers, targets, available)


def _counters(totals: counters.Totals) -> Iterator[Metric]:
    kinds = sorted({"audio", "video", *totals})
    for name, documentation, samples in _COUNTERS:
        family = CounterMetricFamily(name, documentation, labels=["kind", *samples[0][0]])
        for kind in kinds:
            counts = totals.get(kind, counters.KindTotals())
            for labels, count in samples:
                family.add_metric([kind, *labels.values()], count(counts))
        yield family


REGISTRY.register(SfuCollector())
