"""A viewer's down track: one producer's packets, rewritten for one viewer's sender.

``TrackForwarder`` is what every outgoing copy of a producer's track does, a viewer's or a
pipe's (``sfu.pipe``): wait for a keyframe, map sequence numbers and timestamps into its own
stream (``RtpMunger``), and rebuild a packet asked for again from the producer's cache.
``DownTrack`` is a viewer's, which also sends (SRTP, through ``DirectRtpSender`` or the C
loop), counts, and answers the viewer's feedback.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

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

from sfu import aiortc_adapter, counters, native, rtp_sender
from sfu.events import DownTrackClosed, DownTrackStats, SfuEvent
from sfu.forwarding import Batch, ForwardGroup, NativeForwarder
from sfu.munger import RtpMunger
from sfu.negotiation import negotiated_codec
from sfu.producer import Producer
from sfu.retransmission import RetransmissionBudget, RetransmissionLimits

logger = logging.getLogger(__name__)


class TrackForwarder:
    """One producer's track forwarded into one outgoing RTP stream (``ssrc``): the
    keyframe gate, the mapping into the stream (``munger``), and repairs.

    It waits for a keyframe (video) before it forwards anything, and again after each
    switch to another producer, whose stream the munger re-bases onto the one sent so far.
    Subclasses send: ``_send`` a batch's packets from ``first`` on, ``_repair`` builds a
    packet to resend."""

    def __init__(self, producer: Producer, munger: RtpMunger, ssrc: int) -> None:
        self._producer = producer
        self._munger = munger
        self._ssrc = ssrc
        self._waiting_keyframe = producer.needs_keyframes
        self.packets_dropped_waiting_keyframe = 0
        munger.switch_source()

    @property
    def producer(self) -> Producer:
        return self._producer

    @property
    def waiting_keyframe(self) -> bool:
        """Forwarding waits for the producer's next keyframe."""
        return self._waiting_keyframe

    def _follow(self, producer: Producer) -> None:
        """Continue from ``producer`` (a publisher's restart): its stream is re-based onto
        the one sent so far, from its next keyframe."""
        self._producer = producer
        self._munger.switch_source()
        self._waiting_keyframe = producer.needs_keyframes

    def forward(self, templates: list[bytes], batch: Batch, now: float, ntp: int) -> None:
        """Send a batch of producer packets (``templates``: serialized for this forwarder's
        group), from its first keyframe while one is awaited."""
        first = 0
        if self._waiting_keyframe:
            keyframe = batch.first_keyframe()
            if keyframe is None:
                self.packets_dropped_waiting_keyframe += len(batch.packets)
                return
            first = keyframe
            self.packets_dropped_waiting_keyframe += first
        if self._send(templates, batch, first, now, ntp):
            self._waiting_keyframe = False

    def _send(self, templates: list[bytes], batch: Batch, first: int, now: float, ntp: int) -> bool:
        """Send ``batch.packets[first:]``; whether the keyframe awaited (if any) is sent."""
        raise NotImplementedError

    def _repair(
        self, out_sequence_number: int, payload_type: int, now: float, max_age: float
    ) -> tuple[RtpPacket, RtpPacket] | None:
        """The packet this stream sent as ``out_sequence_number``, rebuilt from the
        producer's cache to send again, with the cached packet it came from; None when it
        cannot be: not forwarded (yet), or more than ``max_age`` seconds behind the newest."""
        munger = self._munger
        sequence_number = munger.incoming_sequence_number(out_sequence_number)
        cached = None if sequence_number is None else self._producer.cached_packet(sequence_number)
        if cached is None:
            return None
        mapped = munger.map(cached.sequence_number, cached.timestamp, now)
        if mapped is None or munger.seconds_behind(mapped[1]) > max_age:
            return None
        packet = RtpPacket(
            payload_type=payload_type,
            marker=cached.marker,
            sequence_number=mapped[0],
            timestamp=mapped[1],
            ssrc=self._ssrc,
            payload=munger.map_vp8(cached.payload, 0),
        )
        return packet, cached


# The padding of a probe packet: the most one packet's padding length octet allows.
PROBE_PADDING = 255


class _LayerSwitch:
    """A down track's place in the forward group of the layer it switches to, until that
    layer's first keyframe (``DownTrack.switch_layer``)."""

    def __init__(self, down_track: DownTrack, producer: Producer) -> None:
        self.down_track = down_track
        self.producer = producer

    @property
    def waiting_keyframe(self) -> bool:
        return True  # the producer asks its publisher again while none comes

    def forward(self, templates: list[bytes], batch: Batch, now: float, ntp: int) -> None:
        first = batch.first_keyframe()
        if first is not None:
            self.down_track._switched(self, templates, batch, first, now, ntp)

    def close(self, reason: str) -> None:
        """The layer closed before its keyframe came: the switch is off."""
        self.down_track._cancel_switch()


class DownTrack(TrackForwarder):
    """Sends one producer's packets to one viewer: everything one viewer track's
    forwarding is, in one place (as LiveKit's DownTrack).

    The munger belongs to the viewer's outgoing stream and outlives down tracks (a later
    down track on the same sender continues its sequence numbers and timestamps: see
    ``sfu.viewer.SendSlot``). A down track idles until the viewer's sender has started (DTLS
    up), then waits for a keyframe (video), asking the producer for one, and from there
    forwards every packet with the viewer's SSRC, payload type and a continuous sequence
    number and timestamp space, even when the producer is replaced by a reconnecting
    publisher. It answers the viewer's NACKs from the producer's cache, within the viewer's
    retransmission budget (``sfu.retransmission``), and passes its PLI/FIR to the
    producer's throttled keyframe requester.

    Where the C loop (``sfu.native``) forwards (``native`` on, and built), the down track
    hands its forwarding to it once its stream has started (on a keyframe, for video) and
    its sender can send through a ``struct onair_target``. The mapping is the munger's
    ``struct onair_mapping`` either way, which the target points to; the C loop's counters
    are taken from the target into this track's (``native_upkeep``). The down track takes
    the forwarding back when its socket would block (``handed_back``), its connection
    changes (``native_upkeep``), its producer changes or it closes.
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
        on_close: Callable[[DownTrack], None],
        retransmission: RetransmissionLimits | None = None,
        on_first_frame: Callable[[], None] | None = None,
    ) -> None:
        ssrc, self._rtx_ssrc = aiortc_adapter.sender_ssrcs(sender)
        super().__init__(producer, munger, ssrc)
        self.id = str(uuid.uuid4())
        self.router_id = router_id
        self.viewer_id = viewer_id
        self.kind = producer.kind
        self.closed = False
        self._sender = sender
        self._emit = emit
        self._on_close = on_close
        # called once, when its first keyframe has gone out (a video track's)
        self._on_first_frame = on_first_frame
        self._parameters: RTCRtpSendParameters | None = None
        self._group: ForwardGroup | None = None
        self._rtx_payload_type: int | None = None
        self._rtx_sequence_number = 0
        self._rtp: rtp_sender.DirectRtpSender | None = None
        self._native: Any = None  # the C loop's struct onair_target, while it forwards
        self._packets_sent = 0
        self._bytes_sent = 0
        # of those, what the C loop sent; how often it handed the track back to Python
        # (its socket would block), and the datagrams it dropped then (spill buffer full)
        self.native_packets_sent = 0
        self.native_bytes_sent = 0
        self.native_handoffs = 0
        self.socket_dropped_packets = 0
        self.nacks_received = 0
        self.retransmitted_packets = 0
        self.nack_misses = 0
        self._budget = RetransmissionBudget(
            retransmission or RetransmissionLimits(), time.monotonic()
        )
        self.keyframe_requests_received = 0
        self._paused = False
        self._switching: _LayerSwitch | None = None
        self._group_args: tuple[tuple[object, ...], int, str | None, HeaderExtensionsMap] | None = (
            None
        )
        self._keyframe_request: asyncio.Future[None] | None = None
        self.layer_switches = 0
        self.probe_packets = 0
        self.probe_bytes = 0
        producer.attach(self)

    @property
    def sender(self) -> RTCRtpSender:
        return self._sender

    @property
    def rtp_sender(self) -> rtp_sender.DirectRtpSender | None:
        """What sends this viewer's RTP once its sender has started."""
        return self._rtp

    @property
    def group(self) -> ForwardGroup | None:
        """The producer's forward group this track is in, while it forwards."""
        return self._group

    @property
    def paused(self) -> bool:
        """Sends nothing (``pause``) until ``switch_layer``."""
        return self._paused

    @property
    def switching_to(self) -> Producer | None:
        """The layer a switch waits for a keyframe of (``switch_layer``), if any."""
        return self._switching.producer if self._switching is not None else None

    @property
    def native_target(self) -> Any:
        """The ``struct onair_target`` the C loop forwards through, while it does."""
        return self._native

    @property
    def packets_sent(self) -> int:
        self._take_native_counters()
        return self._packets_sent

    @property
    def bytes_sent(self) -> int:
        self._take_native_counters()
        return self._bytes_sent

    @property
    def forwarded_natively(self) -> bool:
        """Whether the C loop (``sfu.native``) holds a target for this viewer, so sends to
        it leave from C rather than from ``DownTrack.forward``."""
        return self._native is not None

    async def start(self, parameters: RTCRtpSendParameters) -> None:
        """Begin forwarding with the viewer's negotiated send parameters; again (aiortc
        starts a sender on each connect after a description is applied): rebind with them."""
        self._unbind()
        self._parameters = parameters
        if self._rtp is None:
            self._rtp = rtp_sender.DirectRtpSender(self._sender)
        await self._bind()

    async def switch_producer(self, producer: Producer) -> None:
        """Continue from another producer of the same kind (publisher restart)."""
        self._cancel_switch()
        self._unbind()
        self._producer.detach(self)
        self._follow(producer)
        producer.attach(self)
        if self._parameters is not None and not self._paused:
            await self._bind()

    async def switch_layer(self, producer: Producer) -> None:
        """Continue from another layer of the same track (``producer``), from its next
        keyframe, which it is asked for; until that arrives the current layer goes on
        being sent (make-before-break), so the picture never freezes for a switch. A paused
        track resumes this way, and one not forwarding yet simply starts on ``producer``.
        The munger re-bases the new layer's sequence numbers and timestamps onto the
        stream sent so far: layers of one source share a capture clock but not their RTP
        timestamps' origin, so the step is the time since the last packet sent."""
        if producer is self._producer and not self._paused:
            self._cancel_switch()
            return
        if self._switching is not None and self._switching.producer is producer:
            return
        self._cancel_switch()
        if self._paused or self._group is None or self._waiting_keyframe:
            self._paused = False
            self.layer_switches += 1
            await self.switch_producer(producer)
            return
        switch = _LayerSwitch(self, producer)
        self._switching = switch
        assert self._group_args is not None
        producer.attach(switch)
        producer.start_forwarding(switch, *self._group_args)
        await producer.request_keyframe(join=True)

    def pause(self) -> None:
        """Send nothing more of this track (a viewer whose link takes no layer of it):
        out of its forward group and the C loop, so nothing is rendered or sent for it,
        until ``switch_layer``."""
        if self._paused:
            return
        self._cancel_switch()
        self._unbind()
        self._paused = True

    def _cancel_switch(self) -> None:
        switch, self._switching = self._switching, None
        if switch is not None:
            switch.producer.stop_forwarding(switch)
            switch.producer.detach(switch)

    def _switched(
        self,
        switch: _LayerSwitch,
        templates: list[bytes],
        batch: Batch,
        first: int,
        now: float,
        ntp: int,
    ) -> None:
        """The layer a switch waited for sent a keyframe (``batch.packets[first]``):
        leave the current layer and forward the new one from that keyframe on."""
        producer = switch.producer
        self._cancel_switch()
        self._unbind()
        self._producer.detach(self)
        self._follow(producer)
        producer.attach(self)
        self.layer_switches += 1
        assert self._group_args is not None
        self._group = producer.start_forwarding(self, *self._group_args)
        # this batch is being forwarded to the group's members as they were before: send it
        if self._rtp is not None and self._send(templates, batch, first, now, ntp):
            self._waiting_keyframe = False
        else:  # not sent after all (the socket is not ready): from the next keyframe
            self._keyframe_request = asyncio.ensure_future(producer.request_keyframe(join=True))

    def send_probe(self, size: int) -> int:
        """Send about ``size`` bytes of padding on the retransmission stream (RFC 4588
        padding-only packets, as libwebrtc probes with): a receiver drops them, but its
        bandwidth estimate counts them; a paused track sends them too. The bytes sent (0
        when there is no RTX stream to send them on, or before the sender has started)."""
        rtp = self._rtp
        if self._group_args is None or rtp is None or self._rtx_payload_type is None:
            return 0
        _, _, mid, extensions_map = self._group_args
        timestamp = self._munger.mapping.last_out_ts
        abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
        sent = 0
        while sent < size:
            packet = RtpPacket(
                payload_type=self._rtx_payload_type,
                sequence_number=self._rtx_sequence_number,
                timestamp=timestamp,
                ssrc=self._rtx_ssrc,
            )
            packet.padding_size = PROBE_PADDING
            packet.extensions = HeaderExtensions(mid=mid, abs_send_time=abs_send_time)
            self._rtx_sequence_number = (self._rtx_sequence_number + 1) & 0xFFFF
            size_sent = rtp.send_packet(packet.serialize(extensions_map))
            if not size_sent:
                break
            sent += size_sent
            self.probe_packets += 1
        self.probe_bytes += sent
        return sent

    def stats(self) -> DownTrackStats:
        return DownTrackStats(
            down_track_id=self.id,
            viewer_id=self.viewer_id,
            kind=self.kind,
            packets_sent=self.packets_sent,
            bytes_sent=self.bytes_sent,
            nacks_received=self.nacks_received,
            retransmitted_packets=self.retransmitted_packets,
            nack_misses=self.nack_misses,
            nacks_refused=self._budget.refused,
            keyframe_requests_received=self.keyframe_requests_received,
            packets_dropped_waiting_keyframe=self.packets_dropped_waiting_keyframe,
        )

    def totals(self) -> counters.KindTotals:
        """Its counts, for the process's totals (``sfu.counters``)."""
        rtp = self._rtp
        return counters.KindTotals(
            packets_sent=self.packets_sent,
            bytes_sent=self.bytes_sent,
            nacks_received=self.nacks_received,
            retransmitted_packets=self.retransmitted_packets,
            nack_misses=self.nack_misses,
            nacks_refused=self._budget.refused,
            keyframe_requests_received=self.keyframe_requests_received,
            dropped_keyframe_gate=self.packets_dropped_waiting_keyframe,
            dropped_pacer=rtp.paced_dropped_packets if rtp is not None else 0,
            dropped_socket=self.socket_dropped_packets,
            native_packets_sent=self.native_packets_sent,
            native_bytes_sent=self.native_bytes_sent,
            native_handoffs=self.native_handoffs,
        )

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_switch()
        self._unbind()
        counters.retire(self.kind, self.totals())
        if self._rtp is not None:
            self._rtp.close()
        self._rtp = None
        self._producer.detach(self)
        self._on_close(self)
        self._emit(
            DownTrackClosed(
                router_id=self.router_id,
                viewer_id=self.viewer_id,
                down_track_id=self.id,
                kind=self.kind,
                reason=reason,
            )
        )

    def _unbind(self) -> None:
        """Out of the C loop and out of the forward group."""
        self._leave_native()
        if self._group is not None:
            self._producer.stop_forwarding(self)
            self._group = None

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
        self._group_args = (
            (codec.payload_type, self._parameters.muxId, extensions),
            codec.payload_type,
            self._parameters.muxId,
            extensions_map,
        )
        if self._paused:
            return
        self._group = self._producer.start_forwarding(self, *self._group_args)
        if self._waiting_keyframe:
            await self._producer.request_keyframe(join=True)

    def forward(self, templates: list[bytes], batch: Batch, now: float, ntp: int) -> None:
        """Send a batch of producer packets, serialized for this track's group; hand the
        forwarding to the C loop once the stream has started, where it can."""
        if self._rtp is None:
            return
        waiting = self._waiting_keyframe
        super().forward(templates, batch, now, ntp)
        if waiting and not self._waiting_keyframe and self._on_first_frame is not None:
            first_frame, self._on_first_frame = self._on_first_frame, None
            first_frame()
        group = self._group
        if (
            group is not None
            and group.targets is not None
            and not self._waiting_keyframe
            and not self._munger.rebasing
            and self._munger.native
        ):
            self._enter_native(group)

    def handed_back(
        self,
        handoff: native.Handoff[NativeForwarder],
        templates: list[bytes],
        batch: Batch,
        now: float,
        ntp: int,
    ) -> None:
        """The C loop stopped forwarding to this viewer because its socket would block:
        queue what the socket did not take, and forward the rest of the batch from here
        (queued behind it), until the transport has drained."""
        self.native_handoffs += 1
        if self._native is not None and self._native.spill_dropped:
            self.socket_dropped_packets += self._native.spill_dropped
            logger.warning(
                "a viewer's socket refused more than the SFU holds for it: datagrams lost",
                extra={"router_id": self.router_id, "viewer_id": self.viewer_id},
            )
            self._native.spill_dropped = 0
        self._leave_native()
        if self._rtp is not None:
            self._rtp.queue(handoff.datagrams)
            self._send(templates, batch, handoff.resume, now, ntp)

    def native_upkeep(self) -> None:
        """Take the C loop's counters; take the forwarding back if the connection changed."""
        target = self._native
        if target is None:
            return
        self._take_native_counters()
        if self._rtp is None or not self._rtp.native_target_valid():
            self._leave_native()

    def _send(self, templates: list[bytes], batch: Batch, first: int, now: float, ntp: int) -> bool:
        rtp = self._rtp
        assert rtp is not None
        packets = batch.packets
        out_templates: list[bytes] = []
        out_headers: list[tuple[int, int]] = []
        payload_bytes = 0
        munger = self._munger
        map_header = munger.map
        vp8 = munger.mapping.vp8
        for index in range(first, len(packets)):
            packet = packets[index]
            mapped = map_header(packet.sequence_number, packet.timestamp, now)
            if mapped is not None:
                template = templates[index]
                if vp8:
                    template = munger.map_vp8(template, len(template) - len(packet.payload))
                out_templates.append(template)
                out_headers.append(mapped)
                payload_bytes += len(packet.payload)
        sent = rtp.send(out_templates, out_headers, self._ssrc, ntp, payload_bytes)
        if not sent:
            # a keyframe that could not be sent does not count: the producer is asked again
            return False
        self._packets_sent += len(out_templates)
        self._bytes_sent += sent
        return True

    def _enter_native(self, group: ForwardGroup) -> None:
        assert self._rtp is not None
        target = self._rtp.native_target(self._munger.mapping)
        if target is None:
            return
        target.blocked = 0
        self._native = target
        group.enter_native(self, target)

    def _leave_native(self) -> None:
        target = self._native
        if target is None:
            return
        self._take_native_counters()
        self._native = None
        if self._group is not None:
            self._group.leave_native(self)

    def _take_native_counters(self) -> None:
        """Count what the C loop sent since last asked (see ``DirectRtpSender.
        take_native_counters``)."""
        target = self._native
        if target is None:
            return
        if self._rtp is not None:
            packets, rtp_bytes = self._rtp.take_native_counters(target)
            self._packets_sent += packets
            self._bytes_sent += rtp_bytes
            self.native_packets_sent += packets
            self.native_bytes_sent += rtp_bytes

    async def handle_rtcp(self, packet: AnyRtcpPacket) -> bool:
        """Feedback from the viewer; True when consumed here."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self._answer_nack(packet.lost)
            return True
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.keyframe_requests_received += 1
            await self._producer.request_keyframe()
            return True
        return False

    def _answer_nack(self, lost: list[int]) -> None:
        """Resend what the viewer lists as lost, within its budget. The mapping is the one
        the C loop forwards by, if it does (the same memory): nothing to take back first."""
        self.nacks_received += len(lost)
        if self._group is None or self._rtp is None:
            self.nack_misses += len(lost)
            return
        self._take_native_counters()  # the budget weighs what was forwarded
        now = time.monotonic()
        budget = self._budget
        for sequence_number in budget.admit(
            lost,
            now=now,
            forwarded_packets=self._packets_sent,
            forwarded_bytes=self._bytes_sent,
            rtt=aiortc_adapter.sender_rtt(self._sender),
        ):
            size = self._retransmit(sequence_number, now)
            if size:
                budget.resent(sequence_number, size, now)
            else:
                budget.missed(sequence_number, now)

    def _retransmit(self, out_sequence_number: int, now: float) -> int:
        """Resend one packet; the bytes sent (0 if it was not)."""
        group = self._group
        rtp = self._rtp
        assert group is not None
        assert rtp is not None
        repair = self._repair(
            out_sequence_number, group.payload_type, now, self._budget.limits.max_age_seconds
        )
        if repair is None:
            # Not forwarded yet (upstream loss that aiortc is already recovering from the
            # publisher with its own NACK; the repair is forwarded as soon as it arrives, so
            # answering here would only duplicate it), or too old to be of use.
            self.nack_misses += 1
            return 0
        packet, cached = repair
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
        sent = rtp.send_packet(packet.serialize(group.extensions_map))
        if sent:
            self.retransmitted_packets += 1
        return sent
