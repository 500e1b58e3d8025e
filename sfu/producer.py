"""A producer: one incoming track of the publisher, fanned out to consumers."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, clock
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

from sfu import aiortc_adapter, native
from sfu.events import ProducerClosed, ProducerStats, SfuEvent
from sfu.keyframe import KEYFRAME_DETECTORS, KeyframeRequester
from sfu.packet_cache import PacketCache

if TYPE_CHECKING:
    from sfu.consumer import Consumer

logger = logging.getLogger(__name__)


# How long the first packets of a video frame may wait for its last (the one with the
# marker bit): no longer than a frame's interval at 60 fps. Waiting costs no latency, as a
# frame cannot be decoded before its last packet arrives, and that one is sent at once.
FRAME_HOLD_SECONDS = 0.015
# ... and no more of them than this (a keyframe is tens of packets): the first part goes out
# while the rest arrives
FRAME_HOLD_PACKETS = 16
# How often viewers forwarded by the C loop (sfu.native) have their counters taken into the
# stats and RTCP sender reports, and their connection checked (at most this late).
NATIVE_UPKEEP_SECONDS = 0.25
# ... this many per turn of the event loop (≈ 6 µs each), so that packets arriving meanwhile
# wait behind a slice of them, not behind every viewer (100 viewers: ≈ 0.6 ms).
NATIVE_UPKEEP_SLICE = 16


class Batch:
    """The packets a producer forwards together: each with whether it starts a keyframe."""

    __slots__ = ("keyframes", "packets")

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.keyframes: list[bool] = []

    def first_keyframe(self) -> int | None:
        """The index of the first packet that starts a keyframe, if any does."""
        return self.keyframes.index(True) if True in self.keyframes else None


class Forwarder(Protocol):
    """Where a forward group sends packets: a viewer's ``Consumer``, or a pipe to an
    edge router (``sfu.pipe``)."""

    @property
    def waiting_keyframe(self) -> bool: ...

    def forward(self, templates: list[bytes], batch: Batch, now: float, ntp: int) -> None: ...


class ForwardGroup:
    """Consumers whose outgoing packets differ only in SSRC, sequence number and
    timestamp: same payload type, mid and header-extension ids. Each incoming
    packet is serialized once per group into a template the consumers patch.

    Where ``sfu.native`` is built, consumers move into ``targets`` once they can (see
    ``Consumer``), and the C loop forwards to all of them in one call; the others
    (``python_forwarders``: consumers not there yet, and pipes) forward themselves."""

    __slots__ = (
        "consumers",
        "extensions_map",
        "key",
        "mid",
        "payload_type",
        "python_forwarders",
        "targets",
    )

    def __init__(
        self,
        key: tuple[object, ...],
        payload_type: int,
        mid: str | None,
        extensions_map: HeaderExtensionsMap,
    ) -> None:
        self.key = key
        self.payload_type = payload_type
        self.mid = mid
        self.extensions_map = extensions_map
        self.consumers: tuple[Forwarder, ...] = ()
        self.python_forwarders: tuple[Forwarder, ...] = ()
        self.targets: native.TargetSet[Consumer] | None = (
            native.TargetSet() if native.available() else None
        )

    def add(self, forwarder: Forwarder) -> None:
        self.consumers = (*self.consumers, forwarder)
        self._sort()

    def remove(self, forwarder: Forwarder) -> None:
        self.consumers = tuple(c for c in self.consumers if c is not forwarder)
        if self.targets is not None:
            self.targets.discard(forwarder)  # type: ignore[arg-type]
        self._sort()

    def enter_native(self, consumer: Consumer, target: Any) -> None:
        """From now on the C loop forwards to ``consumer`` through ``target``."""
        assert self.targets is not None
        self.targets.add(consumer, target)
        self._sort()

    def leave_native(self, consumer: Consumer) -> None:
        if self.targets is not None:
            self.targets.discard(consumer)
        self._sort()

    def _sort(self) -> None:
        targets = self.targets
        self.python_forwarders = tuple(
            c for c in self.consumers if targets is None or c not in targets
        )

    def render(self, packet: RtpPacket, abs_send_time: int) -> bytes:
        """The packet serialized for this group, with zero SSRC, sequence number
        and timestamp for the consumer to fill in."""
        out = RtpPacket(
            payload_type=self.payload_type,
            marker=packet.marker,
            payload=packet.payload,
        )
        out.extensions = HeaderExtensions(
            mid=self.mid,
            abs_send_time=abs_send_time,
            audio_level=packet.extensions.audio_level,
        )
        return out.serialize(self.extensions_map)


class Producer:
    """One incoming track. Owns its consumers: closing it closes them."""

    def __init__(
        self,
        *,
        router_id: str,
        publisher_id: str,
        kind: str,
        codec: RTCRtpCodecParameters,
        receiver: RTCRtpReceiver,
        cache_size: int,
        keyframe_request_interval: float,
        emit: Callable[[SfuEvent], None],
    ) -> None:
        self.id = str(uuid.uuid4())
        self.router_id = router_id
        self.publisher_id = publisher_id
        self.kind = kind
        self.codec = codec
        self.closed = False
        self._receiver = receiver
        self._emit = emit
        self._ssrc: int | None = None
        self._cache = PacketCache(cache_size)
        self._detect_keyframe = KEYFRAME_DETECTORS.get(codec.mimeType.lower())
        self._keyframes = KeyframeRequester(
            self._send_keyframe_request, keyframe_request_interval, waiting=self._awaits_keyframe
        )
        self._consumers: set[Consumer] = set()
        self._groups: list[ForwardGroup] = []
        self._batch = Batch()
        self._flush_soon = False  # a flush is scheduled for the end of the loop's turn
        self._hold_timer: asyncio.TimerHandle | None = None
        self._frames_end_on_marker = kind == "video"
        self._native_upkeep_at = 0.0
        self._native_upkeep_running = False
        self.packets_received = 0
        self.bytes_received = 0
        self.keyframes_received = 0
        aiortc_adapter.tap_receiver(receiver, self._on_rtp, decode=False)

    @property
    def held_packets(self) -> int:
        """How many received packets wait for the next ``flush``."""
        return len(self._batch.packets)

    @property
    def flush_scheduled(self) -> bool:
        """Whether held packets will be flushed by the frame hold timer
        (``FRAME_HOLD_SECONDS``) rather than by their frame's last packet."""
        return self._hold_timer is not None

    @property
    def mime_type(self) -> str:
        return self.codec.mimeType

    @property
    def receiver(self) -> RTCRtpReceiver:
        return self._receiver

    @property
    def consumers(self) -> frozenset[Consumer]:
        return frozenset(self._consumers)

    @property
    def needs_keyframes(self) -> bool:
        return self._detect_keyframe is not None

    def cached_packet(self, sequence_number: int) -> RtpPacket | None:
        return self._cache.get(sequence_number)

    async def request_keyframe(self, *, join: bool = False) -> None:
        """Ask the publisher for a keyframe, throttled per producer; a joining
        viewer's request (``join``) waits for a shorter window (see ``KeyframeRequester``)."""
        if self._detect_keyframe is not None and not self.closed:
            await self._keyframes.request(join=join)

    def stats(self) -> ProducerStats:
        return ProducerStats(
            producer_id=self.id,
            kind=self.kind,
            mime_type=self.mime_type,
            packets_received=self.packets_received,
            bytes_received=self.bytes_received,
            keyframes_received=self.keyframes_received,
            keyframe_requests=self._keyframes.requests,
            keyframe_requests_sent=self._keyframes.sent,
        )

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._keyframes.close()
        self._batch = Batch()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        for consumer in list(self._consumers):
            consumer.close("producer_closed")
        self._cache.clear()
        self._emit(
            ProducerClosed(
                router_id=self.router_id, producer_id=self.id, kind=self.kind, reason=reason
            )
        )

    def _add_consumer(self, consumer: Consumer) -> None:
        self._consumers.add(consumer)

    def _remove_consumer(self, consumer: Consumer) -> None:
        self._consumers.discard(consumer)
        self._stop_forwarding(consumer)

    def _start_forwarding(
        self,
        consumer: Forwarder,
        key: tuple[object, ...],
        payload_type: int,
        mid: str | None,
        extensions_map: HeaderExtensionsMap,
    ) -> ForwardGroup:
        group = next((g for g in self._groups if g.key == key), None)
        if group is None:
            group = ForwardGroup(key, payload_type, mid, extensions_map)
            self._groups.append(group)
        group.add(consumer)
        return group

    def _stop_forwarding(self, consumer: Forwarder) -> None:
        for group in self._groups:
            if consumer in group.consumers:
                group.remove(consumer)
        self._groups = [g for g in self._groups if g.consumers]

    def _awaits_keyframe(self) -> bool:
        """Whether a consumer (or pipe) forwarding this producer waits for a keyframe."""
        return any(f.waiting_keyframe for group in self._groups for f in group.consumers)

    async def _send_keyframe_request(self) -> bool:
        if self._ssrc is None or self.closed:
            return False
        await aiortc_adapter.send_pli(self._receiver, self._ssrc)
        return True

    async def _on_rtp(self, packet: RtpPacket) -> None:
        # The hot path: keep it free of logging, allocations and per-consumer tasks.
        payload = packet.payload
        if not payload or self.closed:
            return  # padding-only probes carry nothing to forward
        self._ssrc = packet.ssrc
        self.packets_received += 1
        self.bytes_received += len(payload)
        self._cache.put(packet)
        keyframe = False
        if self._detect_keyframe is not None and self._detect_keyframe(payload):
            keyframe = True
            self.keyframes_received += 1
            self._keyframes.keyframe_received()
        if not self._groups:
            return
        batch = self._batch
        batch.packets.append(packet)
        batch.keyframes.append(keyframe)
        if self._flush_soon:
            return
        if (
            packet.marker
            or not self._frames_end_on_marker
            or len(batch.packets) >= FRAME_HOLD_PACKETS
        ):
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self.flush)
        elif self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(FRAME_HOLD_SECONDS, self.flush)

    def flush(self) -> None:
        """Forward the packets received since the last flush to every consumer.

        Packets are forwarded in batches, viewer by viewer: each viewer's share of a batch
        leaves in one system call (see ``rtp_sender.DirectRtpSender``), and each
        viewer's state is touched once per batch, not once per packet. The viewers the C
        loop has (``sfu.native``) get the batch in one call per forward group; the others
        forward it themselves. A batch is what
        arrived while the event loop ran its current callbacks (``aiortc_adapter.
        drain_datagrams`` hands over what the socket holds together); a video batch also
        waits for the end of its frame, ``FRAME_HOLD_SECONDS`` and ``FRAME_HOLD_PACKETS`` at
        most."""
        self._flush_soon = False
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        batch = self._batch
        if not batch.packets:
            return
        self._batch = Batch()
        now = time.monotonic()
        ntp = clock.current_ntp_time()
        abs_send_time = (ntp >> 14) & 0x00FFFFFF
        for group in self._groups:
            templates = [group.render(packet, abs_send_time) for packet in batch.packets]
            # taken first: a viewer the C loop hands back joins them for the next batch
            python_forwarders = group.python_forwarders
            targets = group.targets
            if targets:
                packed = native.PackedBatch(templates, batch.packets)
                for handoff in targets.forward(packed, now, ntp):
                    consumer = handoff.owner
                    self._forward_safely(
                        consumer.handed_back, consumer, handoff, templates, batch, now, ntp
                    )
            for forwarder in python_forwarders:
                self._forward_safely(forwarder.forward, forwarder, templates, batch, now, ntp)
        if now >= self._native_upkeep_at and not self._native_upkeep_running:
            self._native_upkeep_at = now + NATIVE_UPKEEP_SECONDS
            owners = [c for group in self._groups if group.targets for c in group.targets.owners]
            if owners:
                self._native_upkeep_running = True
                asyncio.get_running_loop().call_soon(self._native_upkeep, owners, 0)

    def _native_upkeep(self, consumers: list[Consumer], start: int) -> None:
        """``Consumer.native_upkeep`` for ``consumers[start:]``, ``NATIVE_UPKEEP_SLICE`` of
        them per turn of the event loop, after the batch that found them due has left."""
        end = start + NATIVE_UPKEEP_SLICE
        for consumer in consumers[start:end]:
            self._forward_safely(consumer.native_upkeep, consumer)
        if end < len(consumers) and not self.closed:
            asyncio.get_running_loop().call_soon(self._native_upkeep, consumers, end)
        else:
            self._native_upkeep_running = False

    def _forward_safely(
        self, forward: Callable[..., None], forwarder: Forwarder, *args: Any
    ) -> None:
        try:
            forward(*args)
        except Exception:  # one broken viewer must not cost the others a packet
            logger.exception(
                "forwarding failed: that viewer gets no more of this track",
                extra={"router_id": self.router_id, "kind": self.kind},
            )
            self._stop_forwarding(forwarder)
