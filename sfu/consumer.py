"""A consumer: one producer's packets, rewritten for one viewer's sender."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from aiortc import RTCRtpSender, clock
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    wrap_rtx,
)

from sfu import aiortc_adapter
from sfu.events import ConsumerClosed, ConsumerStats, SfuEvent
from sfu.munger import RtpMunger
from sfu.negotiation import negotiated_codec
from sfu.producer import Batch, ForwardGroup, Producer


class Consumer:
    """Sends one producer's packets to one viewer.

    The munger belongs to the viewer's outgoing stream and outlives consumers,
    so a later consumer on the same sender continues its sequence numbers and
    timestamps. It idles until the viewer's sender has started (DTLS up), then waits for a
    keyframe (video), asking the producer for one, and from there forwards every
    packet with the viewer's SSRC, payload type and a continuous sequence number
    and timestamp space, even when the producer is replaced by a reconnecting
    publisher. It answers the viewer's NACKs from the producer's cache and passes
    its PLI/FIR to the producer's throttled keyframe requester.
    """

    def __init__(
        self,
        *,
        router_id: str,
        viewer_id: str,
        producer: Producer,
        sender: RTCRtpSender,
        munger: RtpMunger,
        emit: Callable[[SfuEvent], None],
        on_close: Callable[[Consumer], None],
    ) -> None:
        self.id = str(uuid.uuid4())
        self.router_id = router_id
        self.viewer_id = viewer_id
        self.kind = producer.kind
        self.closed = False
        self._producer = producer
        self._sender = sender
        self._emit = emit
        self._on_close = on_close
        self._parameters: RTCRtpSendParameters | None = None
        self._group: ForwardGroup | None = None
        self._munger = munger
        munger.switch_source()
        self._ssrc, self._rtx_ssrc = aiortc_adapter.sender_ssrcs(sender)
        self._rtx_payload_type: int | None = None
        self._rtx_sequence_number = 0
        self._rtp: aiortc_adapter.DirectRtpSender | None = None
        self._waiting_keyframe = producer.needs_keyframes
        self.packets_sent = 0
        self.bytes_sent = 0
        self.nacks_received = 0
        self.retransmitted_packets = 0
        self.nack_misses = 0
        self.keyframe_requests_received = 0
        self.packets_dropped_waiting_keyframe = 0
        producer._add_consumer(self)

    @property
    def producer(self) -> Producer:
        return self._producer

    @property
    def sender(self) -> RTCRtpSender:
        return self._sender

    @property
    def waiting_keyframe(self) -> bool:
        """Forwarding to this viewer waits for the producer's next keyframe."""
        return self._waiting_keyframe

    async def start(self, parameters: RTCRtpSendParameters) -> None:
        """Begin forwarding with the viewer's negotiated send parameters."""
        self._parameters = parameters
        self._rtp = aiortc_adapter.DirectRtpSender(self._sender)
        await self._bind()

    async def switch_producer(self, producer: Producer) -> None:
        """Continue from another producer of the same kind (publisher restart)."""
        self._producer._remove_consumer(self)
        self._group = None
        self._producer = producer
        producer._add_consumer(self)
        self._munger.switch_source()
        self._waiting_keyframe = producer.needs_keyframes
        if self._parameters is not None:
            await self._bind()

    def stats(self) -> ConsumerStats:
        return ConsumerStats(
            consumer_id=self.id,
            viewer_id=self.viewer_id,
            kind=self.kind,
            packets_sent=self.packets_sent,
            bytes_sent=self.bytes_sent,
            nacks_received=self.nacks_received,
            retransmitted_packets=self.retransmitted_packets,
            nack_misses=self.nack_misses,
            keyframe_requests_received=self.keyframe_requests_received,
            packets_dropped_waiting_keyframe=self.packets_dropped_waiting_keyframe,
        )

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._group = None
        self._rtp = None
        self._producer._remove_consumer(self)
        self._on_close(self)
        self._emit(
            ConsumerClosed(
                router_id=self.router_id,
                viewer_id=self.viewer_id,
                consumer_id=self.id,
                kind=self.kind,
                reason=reason,
            )
        )

    async def _bind(self) -> None:
        assert self._parameters is not None
        codec = negotiated_codec(self._parameters, self._producer.codec)
        if codec is None:
            self.close("codec_mismatch")
            return
        self._rtx_payload_type = codec.rtx_payload_type
        extensions = tuple((e.id, e.uri) for e in self._parameters.headerExtensions)
        extensions_map = HeaderExtensionsMap()
        extensions_map.configure(self._parameters)
        self._group = self._producer._start_forwarding(
            self,
            key=(codec.payload_type, self._parameters.muxId, extensions),
            payload_type=codec.payload_type,
            mid=self._parameters.muxId,
            extensions_map=extensions_map,
        )
        if self._waiting_keyframe:
            await self._producer.request_keyframe(join=True)

    def forward(self, templates: list[bytes], batch: Batch, now: float, ntp: int) -> None:
        """Send a batch of producer packets, serialized for this consumer's group."""
        rtp = self._rtp
        if rtp is None:
            return
        packets = batch.packets
        first = 0
        if self._waiting_keyframe:
            keyframe = batch.first_keyframe()
            if keyframe is None:
                self.packets_dropped_waiting_keyframe += len(packets)
                return
            first = keyframe
            self.packets_dropped_waiting_keyframe += first
        out_templates: list[bytes] = []
        out_headers: list[tuple[int, int]] = []
        payload_bytes = 0
        map_header = self._munger.map
        for index in range(first, len(packets)):
            packet = packets[index]
            mapped = map_header(packet.sequence_number, packet.timestamp, now)
            if mapped is not None:
                out_templates.append(templates[index])
                out_headers.append(mapped)
                payload_bytes += len(packet.payload)
        sent = rtp.send(out_templates, out_headers, self._ssrc, ntp, payload_bytes)
        if sent:
            # the viewer has its keyframe (until then, one that could not be sent does not
            # count: the producer is asked again)
            self._waiting_keyframe = False
            self.packets_sent += len(out_templates)
            self.bytes_sent += sent

    async def handle_rtcp(self, packet: AnyRtcpPacket) -> bool:
        """Feedback from the viewer; True when consumed here."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            for sequence_number in packet.lost:
                self._retransmit(sequence_number)
            return True
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.keyframe_requests_received += 1
            await self._producer.request_keyframe()
            return True
        return False

    def _retransmit(self, out_sequence_number: int) -> None:
        self.nacks_received += 1
        group = self._group
        sequence_number = self._munger.incoming_sequence_number(out_sequence_number)
        cached = None if sequence_number is None else self._producer.cached_packet(sequence_number)
        if cached is None or group is None or self._rtp is None:
            # Not forwarded yet: upstream loss that aiortc is already recovering
            # from the publisher with its own NACK; the repair is forwarded as
            # soon as it arrives, so answering here would only duplicate it.
            self.nack_misses += 1
            return
        mapped = self._munger.map(cached.sequence_number, cached.timestamp, time.monotonic())
        if mapped is None:
            self.nack_misses += 1
            return
        packet = RtpPacket(
            payload_type=group.payload_type,
            marker=cached.marker,
            sequence_number=mapped[0],
            timestamp=mapped[1],
            ssrc=self._ssrc,
            payload=cached.payload,
        )
        if self._rtx_payload_type is not None:
            packet = wrap_rtx(
                packet,
                payload_type=self._rtx_payload_type,
                sequence_number=self._rtx_sequence_number,
                ssrc=self._rtx_ssrc,
            )
            self._rtx_sequence_number = (self._rtx_sequence_number + 1) & 0xFFFF
        packet.extensions = HeaderExtensions(
            mid=group.mid,
            abs_send_time=(clock.current_ntp_time() >> 14) & 0x00FFFFFF,
            audio_level=cached.extensions.audio_level,
        )
        if self._rtp.send_packet(packet.serialize(group.extensions_map)):
            self.retransmitted_packets += 1
