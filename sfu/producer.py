"""A producer: one incoming track of the publisher, fanned out to viewers' down tracks."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, clock
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu import aiortc_adapter, counters, native
from sfu.events import ProducerClosed, ProducerStats, SfuEvent
from sfu.forwarding import (
    Attached,
    Batch,
    Forwarder,
    ForwardGroup,
    NativeForwarder,
    PacketTap,
)
from sfu.keyframe import FRAME_SIZE_READERS, KEYFRAME_DETECTORS, KeyframeRequester
from sfu.packet_cache import PacketCache

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
# ``Producer.bitrate`` counts the payload of the bucket under way and the one before it:
# buckets of this length, so it covers the last 0.5 to 1 s.
BITRATE_BUCKET_SECONDS = 0.5


class Producer:
    """One incoming stream: a track, or one layer (encoding) of a simulcast track, whose
    ``rid`` names it (None without simulcast; ``sfu.track.PublishedTrack`` groups the
    layers). Owns the down tracks attached to it: closing it closes them.

    ``native_forwarding`` (``RouterOptions.native_forwarding``): its forward groups hand
    viewers to the C loop (``sfu.native``) where it is built."""

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
        native_forwarding: bool = True,
        rid: str | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.rid = rid
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
        self._read_frame_size = FRAME_SIZE_READERS.get(codec.mimeType.lower())
        self._keyframes = KeyframeRequester(
            self._send_keyframe_request, keyframe_request_interval, waiting=self._awaits_keyframe
        )
        self._native_forwarding = native_forwarding
        self._down_tracks: set[Attached] = set()
        self._groups: list[ForwardGroup] = []
        self._taps: tuple[PacketTap, ...] = ()
        self._batch = Batch()
        self._flush_soon = False  # a flush is scheduled for the end of the loop's turn
        self._hold_timer: asyncio.TimerHandle | None = None
        self._frames_end_on_marker = kind == "video"
        self._native_upkeep_at = 0.0
        self._native_upkeep_running = False
        self.packets_received = 0
        self.bytes_received = 0
        self.keyframes_received = 0
        self.duplicates_received = 0  # packets received again, not forwarded
        # (width, height) of the last keyframe that told it (VP8 keyframes do)
        self.frame_size: tuple[int, int] | None = None
        # time.monotonic() of the last packet with a payload; None before the first
        self.last_packet_at: float | None = None
        self._bucket_at = 0.0  # see ``bitrate``: when the bucket under way began ...
        self._bucket_bytes = 0  # ... and bytes_received then
        self._previous_at = 0.0  # the same for the bucket before it
        self._previous_bytes = 0
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
    def ssrc(self) -> int | None:
        """The media SSRC of the packets received last; None before the first."""
        return self._ssrc

    @property
    def down_tracks(self) -> frozenset[Attached]:
        """The viewer tracks attached to this producer (``sfu.downtrack.DownTrack``)."""
        return frozenset(self._down_tracks)

    @property
    def needs_keyframes(self) -> bool:
        return self._detect_keyframe is not None

    def bitrate(self, now: float) -> float:
        """Payload bits per second received over about the last second (0.5 to 1 s) up to
        ``now`` (``time.monotonic()``); 0 when nothing came for a second."""
        last = self.last_packet_at
        if last is None or now - last > 2 * BITRATE_BUCKET_SECONDS:
            return 0.0
        elapsed = max(now - self._previous_at, BITRATE_BUCKET_SECONDS)
        return (self.bytes_received - self._previous_bytes) * 8 / elapsed

    def active(self, now: float, within: float = 1.0) -> bool:
        """Whether a packet came in the last ``within`` seconds: a simulcast publisher
        stops sending a layer its bandwidth does not allow."""
        return self.last_packet_at is not None and now - self.last_packet_at <= within

    def _start_bucket(self, now: float) -> None:
        """Start a bitrate bucket at ``now`` (``bitrate``); after a silence, the previous
        bucket starts now too, so the silence does not count."""
        if now - self._bucket_at >= 2 * BITRATE_BUCKET_SECONDS:
            self._previous_at, self._previous_bytes = now, self.bytes_received
        else:
            self._previous_at, self._previous_bytes = self._bucket_at, self._bucket_bytes
        self._bucket_at, self._bucket_bytes = now, self.bytes_received

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
            rid=self.rid,
            duplicates_received=self.duplicates_received,
        )

    def totals(self) -> counters.KindTotals:
        """Its counts, for the process's totals (``sfu.counters``)."""
        return counters.KindTotals(
            packets_received=self.packets_received,
            bytes_received=self.bytes_received,
            duplicates_received=self.duplicates_received,
            keyframes_received=self.keyframes_received,
            keyframe_requests=self._keyframes.requests,
            keyframe_join_requests=self._keyframes.join_requests,
            keyframe_requests_sent=self._keyframes.sent,
        )

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        counters.retire(self.kind, self.totals())
        self._keyframes.close()
        self._batch = Batch()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._taps = ()
        for track in list(self._down_tracks):
            track.close("producer_closed")
        self._cache.clear()
        self._emit(
            ProducerClosed(
                router_id=self.router_id, producer_id=self.id, kind=self.kind, reason=reason
            )
        )

    def attach(self, track: Attached) -> None:
        """Hold ``track`` until it is detached; closing the producer closes it."""
        self._down_tracks.add(track)

    def detach(self, track: Attached) -> None:
        self._down_tracks.discard(track)

    def start_forwarding(
        self,
        forwarder: Forwarder,
        key: tuple[object, ...],
        payload_type: int,
        mid: str | None,
        extensions_map: HeaderExtensionsMap,
    ) -> ForwardGroup:
        """Forward every batch to ``forwarder`` from now on, in the group of ``key`` (its
        packets' payload type, mid and header extensions), which is returned."""
        group = next((g for g in self._groups if g.key == key), None)
        if group is None:
            group = ForwardGroup(
                key,
                payload_type,
                mid,
                extensions_map,
                native_forwarding=self._native_forwarding,
            )
            self._groups.append(group)
        group.add(forwarder)
        return group

    def stop_forwarding(self, forwarder: Forwarder) -> None:
        for group in self._groups:
            if forwarder in group.forwarders:
                group.remove(forwarder)
        self._groups = [g for g in self._groups if g.forwarders]

    def add_tap(self, tap: PacketTap) -> None:
        """Hand every packet received from now on to ``tap`` too, until ``remove_tap`` or the
        producer closes."""
        if tap not in self._taps:
            self._taps = (*self._taps, tap)

    def remove_tap(self, tap: PacketTap) -> None:
        self._taps = tuple(t for t in self._taps if t is not tap)

    def _awaits_keyframe(self) -> bool:
        """Whether a viewer, pipe or tap of this producer waits for a keyframe."""
        return any(t.waiting_keyframe for t in self._taps) or any(
            f.waiting_keyframe for group in self._groups for f in group.forwarders
        )

    def _tap(self, packet: RtpPacket, now: float) -> None:
        for tap in self._taps:
            try:
                tap.on_packet(packet, now)
            except Exception:  # a broken recording must not cost the viewers a packet
                logger.exception(
                    "packet tap failed: it gets no more of this track",
                    extra={"router_id": self.router_id, "kind": self.kind},
                )
                self.remove_tap(tap)

    async def _send_keyframe_request(self) -> bool:
        if self._ssrc is None or self.closed:
            return False
        await aiortc_adapter.send_pli(self._receiver, self._ssrc)
        return True

    async def _on_rtp(self, packet: RtpPacket) -> None:
        # The hot path: keep it free of logging, allocations and per-viewer tasks.
        payload = packet.payload
        if not payload or self.closed:
            return  # padding-only probes carry nothing to forward
        cached = self._cache.get(packet.sequence_number)
        if cached is not None and cached.ssrc == packet.ssrc:
            # a packet received already: a retransmission that crossed its original, or
            # a browser probing its bandwidth with recent packets sent again as RTX
            self.duplicates_received += 1
            return
        self._ssrc = packet.ssrc
        now = time.monotonic()
        self.last_packet_at = now
        if now - self._bucket_at >= BITRATE_BUCKET_SECONDS:
            self._start_bucket(now)
        self.packets_received += 1
        self.bytes_received += len(payload)
        self._cache.put(packet)
        keyframe = False
        if self._detect_keyframe is not None and self._detect_keyframe(payload):
            keyframe = True
            self.keyframes_received += 1
            self._keyframes.keyframe_received()
            if self._read_frame_size is not None:
                self.frame_size = self._read_frame_size(payload) or self.frame_size
        if self._taps:
            self._tap(packet, now)
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
        """Forward the packets received since the last flush to every forwarder.

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
                    track = handoff.owner
                    self._forward_safely(
                        track.handed_back, track, handoff, templates, batch, now, ntp
                    )
            for forwarder in python_forwarders:
                self._forward_safely(forwarder.forward, forwarder, templates, batch, now, ntp)
        if now >= self._native_upkeep_at and not self._native_upkeep_running:
            self._native_upkeep_at = now + NATIVE_UPKEEP_SECONDS
            owners = [c for group in self._groups if group.targets for c in group.targets.owners]
            if owners:
                self._native_upkeep_running = True
                asyncio.get_running_loop().call_soon(self._native_upkeep, owners, 0)

    def _native_upkeep(self, tracks: list[NativeForwarder], start: int) -> None:
        """``DownTrack.native_upkeep`` for ``tracks[start:]``, ``NATIVE_UPKEEP_SLICE`` of
        them per turn of the event loop, after the batch that found them due has left."""
        end = start + NATIVE_UPKEEP_SLICE
        for track in tracks[start:end]:
            self._forward_safely(track.native_upkeep, track)
        if end < len(tracks) and not self.closed:
            asyncio.get_running_loop().call_soon(self._native_upkeep, tracks, end)
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
            self.stop_forwarding(forwarder)
