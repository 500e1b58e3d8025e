"""Every use of aiortc's and aioice's private API by the SFU lives here, and nothing else.

aiortc has no public hooks for packet-level forwarding, so the SFU reaches into
``RTCRtpReceiver``, ``RTCRtpSender`` and ``RTCDtlsTransport`` internals (for the sender in
``sfu.rtp_sender``, among others), and into aioice's ``Connection`` for ``sfu.ice_config``.
Keeping all of those touches in this one module makes an aiortc upgrade a matter of
re-running ``tests/sfu/test_aiortc_adapter.py``, which fails loudly when any of the
internals used below moves. aiortc is pinned in requirements.txt. Hooks only tests and the
bench use are in ``testpeers.aiortc_hooks``, pinned by the same test.
"""

from __future__ import annotations

import asyncio.selector_events
import contextlib
import datetime
import logging
import socket
import struct
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aioice.ice as _aioice_ice
import aiortc.rtcpeerconnection as _pc_module
import aiortc.rtcrtpreceiver as _receiver_module
from aioice import Connection, ConnectionClosed
from aioice.ice import CandidatePair, StunProtocol
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    clock,
)
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtcdtlstransport import State as _DtlsState
from aiortc.rtcrtpparameters import (
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from pylibsrtp import Session
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from sfu.simulcast import REPAIRED_RTP_STREAM_ID_URI, RTP_STREAM_ID_URI

logger = logging.getLogger(__name__)

PacketHandler = Callable[[RtpPacket], Awaitable[None]]

# ≈ 2 s of a 1.5 Mbit/s publisher, in the kernel's accounting (about twice the payload)
INGEST_RECEIVE_BUFFER = 2**21
RtcpHandler = Callable[[AnyRtcpPacket], Awaitable[bool]]

_ASYNCIO_DATAGRAM_TRANSPORT: Any = asyncio.selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]
_MAX_DATAGRAM = 65536
_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_NACK_GENERATOR_ATTR = "_RTCRtpReceiver__nack_generator"
_RTX_SSRC_ATTR = "_RTCRtpReceiver__rtx_ssrc"
_BITRATE_ESTIMATOR_ATTR = "_RTCRtpReceiver__remote_bitrate_estimator"
_RTCP_SSRC_ATTR = "_RTCRtpReceiver__rtcp_ssrc"
_REMOTE_STREAMS_ATTR = "_RTCRtpReceiver__remote_streams"
_ACTIVE_SSRC_ATTR = "_RTCRtpReceiver__active_ssrc"
_PC_DTLS_TRANSPORTS_ATTR = "_RTCPeerConnection__dtlsTransports"
_PC_ICE_TRANSPORTS_ATTR = "_RTCPeerConnection__iceTransports"
_PC_CLOSED_ATTR = "_RTCPeerConnection__isClosed"
_PC_CONNECT_QUALNAME = "RTCPeerConnection.__connect"
CLOSE_TASK_WAIT_SECONDS = 2.0


class _PacketTap:
    """Stands in for a receiver's jitter buffer and keeps the packets handed to it.

    aiortc calls ``add`` after SRTP decryption, statistics, NACK generation and
    RTX unwrapping, so the packets collected here are the original stream in
    arrival order. Without an ``inner`` buffer no frame is ever assembled and the
    receiver's decoder thread stays idle on its queue.
    """

    __slots__ = ("_inner", "pending")

    def __init__(self, inner: Any | None) -> None:
        self._inner = inner
        self.pending: list[RtpPacket] = []

    @property
    def capacity(self) -> int:
        return int(self._inner.capacity) if self._inner is not None else 0

    def add(self, packet: RtpPacket) -> tuple[bool, Any]:
        self.pending.append(packet)
        if self._inner is None:
            return False, None
        return self._inner.add(packet)


def tap_receiver(receiver: RTCRtpReceiver, on_packet: PacketHandler, *, decode: bool) -> None:
    """Call ``on_packet`` with each RTP packet the receiver accepts.

    With ``decode=False`` frames are never assembled, so nothing is ever decoded;
    with ``decode=True`` the receiver keeps decoding as usual (used by test viewers
    that observe sequence numbers). The receiver's own ``_handle_rtp_packet`` is
    wrapped, not replaced: it also keeps receiver statistics, sends NACKs and REMB
    upstream and unwraps RTX.
    """
    inner = getattr(receiver, _JITTER_BUFFER_ATTR)
    tap = _PacketTap(inner if decode else None)
    setattr(receiver, _JITTER_BUFFER_ATTR, tap)
    original = receiver._handle_rtp_packet
    first = True

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        nonlocal first
        if first:
            first = False
            _prepare_ingest_sockets(receiver)
        await original(packet, arrival_time_ms)
        if tap.pending:
            packets = tap.pending
            tap.pending = []
            for accepted in packets:
                await on_packet(accepted)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


def _prepare_ingest_sockets(receiver: Any) -> None:
    """Give the receiver's ICE sockets an ingest's buffers and batched reads; called on its
    first packet: the sockets exist by then, on the transport BUNDLE kept."""
    # sfu.pipe's edge hands over a receiver-like source without a DTLS transport
    dtls = getattr(receiver, "transport", None)
    if isinstance(dtls, RTCDtlsTransport):
        enlarge_receive_buffers(dtls, INGEST_RECEIVE_BUFFER)
        drain_datagrams(dtls)


class ReceiverStandIn:
    """Stands in for an ``RTCRtpReceiver`` where packets come from elsewhere (``sfu.pipe``'s
    edge): a ``Producer`` taps it as it taps a receiver, and its keyframe requests
    (``send_pli``) go to ``on_pli`` with the media SSRC.

    It offers exactly what ``tap_receiver`` and ``send_pli`` use of a receiver, under
    aiortc's private names: a jitter buffer slot, ``_handle_rtp_packet`` and
    ``_send_rtcp_pli``. ``on_pli`` may return an awaitable, which the request awaits."""

    def __init__(self, on_pli: Callable[[int], Awaitable[None] | None]) -> None:
        setattr(self, _JITTER_BUFFER_ATTR, None)
        self._on_pli = on_pli

    async def receive(self, packet: RtpPacket) -> None:
        """Hand ``packet`` to whatever taps this stand-in, as a receiver would."""
        await self._handle_rtp_packet(packet, int(time.time() * 1000))

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        getattr(self, _JITTER_BUFFER_ATTR).add(packet)

    async def _send_rtcp_pli(self, media_ssrc: int) -> None:
        sent = self._on_pli(media_ssrc)
        if sent is not None:
            await sent


class _NackDispatcher:
    """Stands in for a receiver's NACK generator (aiortc's ``add(packet)`` and
    ``missing``) with one generator per media SSRC: simulcast layers arrive on one
    receiver, each with its own sequence numbers, which one generator would take for
    thousands of losses. aiortc reads ``missing`` right after ``add``: it is the last
    packet's stream's."""

    __slots__ = ("_current", "_generators")

    def __init__(self) -> None:
        self._generators: dict[int, NackGenerator] = {}
        self._current = NackGenerator()

    @property
    def missing(self) -> set[int]:
        return self._current.missing

    def add(self, packet: RtpPacket) -> bool:
        generator = self._generators.get(packet.ssrc)
        if generator is None:
            generator = self._generators[packet.ssrc] = NackGenerator()
        self._current = generator
        return generator.add(packet)

    def forget(self, ssrc: int) -> None:
        self._generators.pop(ssrc, None)


class _LayerDemux:
    """Stands in for a receiver's jitter buffer: keeps the packets aiortc hands it
    (RTX unwrapped) for ``SimulcastReceiver`` to give to their layers."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[RtpPacket] = []

    def add(self, packet: RtpPacket) -> tuple[bool, Any]:
        self.pending.append(packet)
        return False, None


class SimulcastReceiver:
    """The layers of a simulcast track, received on one aiortc receiver, each handed to
    its own ``ReceiverStandIn`` (``layers``, by rid), which a ``Producer`` taps.

    aiortc gives every SSRC of a video section to its one receiver, where the layers would
    mix in one jitter buffer and one NACK generator. Here each packet's SSRC is mapped
    to its layer, learned from the rid header extensions (set up with
    ``configure_rid_extensions``), which a browser puts on the first packets of each
    SSRC only: a media SSRC from ``rtp-stream-id``; its retransmission (RTX) SSRC from
    ``repaired-rtp-stream-id``, which can come first and then waits for the media SSRC
    of its rid. The RTX mapping is aiortc's own (``__rtx_ssrc``), so aiortc unwraps
    retransmissions itself; NACKs are generated per media SSRC (``_NackDispatcher``); a
    layer's keyframe request (PLI) names its media SSRC.

    What is kept is bounded by the rids: one media and one RTX SSRC each, a new one
    replacing the old (a publisher restarting its encoder), whose traces in aiortc go
    with it. A packet of an SSRC not
    learned, without a rid of this track, is dropped before aiortc's receiver sees it
    (``dropped`` counts them) and forgotten by the transport's RTP router, so a publisher
    sending random SSRCs grows nothing here, in aiortc's per-SSRC statistics or in its
    routing table."""

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        rids: Sequence[str],
        *,
        rid_extension: int,
        repaired_rid_extension: int | None,
    ) -> None:
        self._receiver = receiver
        self._extension_ids = (rid_extension, repaired_rid_extension)
        self.layers: dict[str, ReceiverStandIn] = {
            rid: ReceiverStandIn(self._request_keyframe) for rid in rids
        }
        self.dropped = 0
        self._ssrc_rid: dict[int, str] = {}  # media SSRC → rid
        self._rid_ssrc: dict[str, int] = {}
        self._rid_rtx: dict[str, int] = {}  # rid → the RTX SSRC repairing it
        self._rtx: dict[int, int] = getattr(receiver, _RTX_SSRC_ATTR)  # RTX → media SSRC
        self._nacks = _NackDispatcher()
        setattr(receiver, _NACK_GENERATOR_ATTR, self._nacks)
        self._demux = _LayerDemux()
        setattr(receiver, _JITTER_BUFFER_ATTR, self._demux)
        self._original = receiver._handle_rtp_packet
        self._first = True
        receiver._handle_rtp_packet = self._handle_rtp_packet  # type: ignore[method-assign]

    def configure_transport(self) -> None:
        """Have the receiver's transport parse the rid header extensions
        (``configure_rid_extensions``): once the offer is applied (the transport exists),
        before media arrives."""
        dtls = self._receiver.transport
        if isinstance(dtls, RTCDtlsTransport):
            configure_rid_extensions(dtls, *self._extension_ids)

    def rid_of(self, ssrc: int) -> str | None:
        """The rid of a media SSRC learned so far."""
        return self._ssrc_rid.get(ssrc)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if self._first:
            self._first = False
            _prepare_ingest_sockets(self._receiver)
        if not self._admit(packet):
            self.dropped += 1
            self._forget_route(packet.ssrc)
            return
        await self._original(packet, arrival_time_ms)
        if self._demux.pending:
            packets, self._demux.pending = self._demux.pending, []
            for accepted in packets:
                rid = self._ssrc_rid.get(accepted.ssrc)
                if rid is not None:
                    await self.layers[rid].receive(accepted)

    def _admit(self, packet: RtpPacket) -> bool:
        """Whether the packet's SSRC is one of the layers' (learning it if it says so)."""
        ssrc = packet.ssrc
        if ssrc in self._ssrc_rid or ssrc in self._rtx:
            return True
        extensions = packet.extensions
        rid = extensions.rtp_stream_id
        if rid is not None and rid in self.layers:
            self._learn_media(rid, ssrc)
            return True
        repaired = extensions.repaired_rtp_stream_id
        if repaired is not None and repaired in self.layers:
            self._learn_rtx(repaired, ssrc)
            return ssrc in self._rtx  # not before its media SSRC is known
        return False

    def _learn_media(self, rid: str, ssrc: int) -> None:
        previous = self._rid_ssrc.get(rid)
        if previous is not None:
            del self._ssrc_rid[previous]
            self._nacks.forget(previous)
            self._forget_ssrc(previous)
        self._ssrc_rid[ssrc] = rid
        self._rid_ssrc[rid] = ssrc
        rtx = self._rid_rtx.get(rid)
        if rtx is not None:
            self._rtx[rtx] = ssrc

    def _learn_rtx(self, rid: str, ssrc: int) -> None:
        previous = self._rid_rtx.get(rid)
        if previous is not None:
            self._rtx.pop(previous, None)
            self._forget_ssrc(previous)
        self._rid_rtx[rid] = ssrc
        media = self._rid_ssrc.get(rid)
        if media is not None:
            self._rtx[ssrc] = media

    def _forget_route(self, ssrc: int) -> None:
        """Take an SSRC dropped here out of the transport's RTP router, which learned it
        from the packet's payload type (one entry per SSRC, kept forever)."""
        dtls = self._receiver.transport
        if isinstance(dtls, RTCDtlsTransport):
            dtls._rtp_router.ssrc_table.pop(ssrc, None)

    def _forget_ssrc(self, ssrc: int) -> None:
        """Forget an SSRC a layer had before its current one: its route and what aiortc's
        receiver keeps per SSRC (statistics for its reports, the sources it lists)."""
        self._forget_route(ssrc)
        getattr(self._receiver, _REMOTE_STREAMS_ATTR).pop(ssrc, None)
        getattr(self._receiver, _ACTIVE_SSRC_ATTR).pop(ssrc, None)

    async def _request_keyframe(self, media_ssrc: int) -> None:
        await self._receiver._send_rtcp_pli(media_ssrc)


def configure_rid_extensions(
    dtls: RTCDtlsTransport, rid_extension: int, repaired_rid_extension: int | None
) -> None:
    """Have ``dtls`` parse the rid header extensions (``rtp-stream-id``, and
    ``repaired-rtp-stream-id`` if given) under these ids in the RTP it receives. aiortc
    parses both once its transport's map has their ids, which its own negotiation never
    gives it; the map keeps what aiortc configures later (it sets only the ids it has)."""
    extensions = [RTCRtpHeaderExtensionParameters(id=rid_extension, uri=RTP_STREAM_ID_URI)]
    if repaired_rid_extension is not None:
        extensions.append(
            RTCRtpHeaderExtensionParameters(
                id=repaired_rid_extension, uri=REPAIRED_RTP_STREAM_ID_URI
            )
        )
    dtls._rtp_header_extensions_map.configure(RTCRtpParameters(headerExtensions=extensions))


def on_receiver_rtcp(receiver: RTCRtpReceiver, callback: Callable[[], None]) -> None:
    """Call ``callback`` for each RTCP packet the remote sender addresses to ``receiver``
    (its sender reports, its BYE), before aiortc handles it."""
    original = receiver._handle_rtcp_packet

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        callback()
        await original(packet)

    receiver._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def enlarge_receive_buffers(transport: RTCDtlsTransport, size: int) -> None:
    """Ask the kernel to hold up to ``size`` bytes of incoming datagrams on each of the
    transport's ICE sockets (Linux caps it at ``net.core.rmem_max``).

    A publisher's packets are every viewer's packets: while the event loop is busy fanning
    out a keyframe to a large audience, or the process waits for a core on a busy machine,
    the default buffer (≈ 90 datagrams of 1.2 KB) overflows and every viewer loses the same
    packets.
    """
    for protocol in transport.transport._connection._protocols:
        if isinstance(protocol, MuxedStunProtocol):  # the shared socket's are set already
            continue
        datagrams = getattr(protocol, "transport", None)  # set once the socket is open
        sock = datagrams.get_extra_info("socket") if datagrams is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


# datagrams read per readiness of an ingest socket, the first included (uvloop reads 32)
INGEST_READ_BATCH = 32


def drain_datagrams(transport: RTCDtlsTransport, limit: int = INGEST_READ_BATCH) -> None:
    """Read up to ``limit`` datagrams each time one of the transport's ICE sockets is
    readable, instead of asyncio's one.

    A video frame arrives as several packets sent back to back. Handed over together, they
    are fanned out together, and each viewer's share of the frame leaves in one system
    call (see ``DirectRtpSender``); read one per turn of the event loop, each would be
    sent on its own. uvloop reads in batches already; its sockets are left alone. Applying
    it again to the same sockets (bundled receivers share them) changes nothing.
    """
    for protocol in transport.transport._connection._protocols:
        datagrams = getattr(protocol, "transport", None)
        if (
            isinstance(datagrams, _ASYNCIO_DATAGRAM_TRANSPORT)
            and not isinstance(protocol, MuxedStunProtocol)  # the shared socket reads its own
            and protocol not in _DRAINED
        ):
            _DRAINED.add(protocol)
            _read_in_batches(protocol, datagrams._sock, limit)


_DRAINED: weakref.WeakSet[Any] = weakref.WeakSet()


def _read_in_batches(protocol: Any, sock: socket.socket, limit: int) -> None:
    received = protocol.datagram_received

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        received(data, addr)
        for _ in range(limit - 1):
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except OSError:  # nothing more to read (or the socket is closing)
                return
            received(data, addr)

    protocol.datagram_received = datagram_received


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the remote sender of ``media_ssrc`` for a keyframe (RTCP PLI)."""
    await receiver._send_rtcp_pli(media_ssrc)


_nack_read_limit = 0  # see limit_nack_parsing; 0: aiortc's own parse
_FCI = struct.Struct("!HH")
_FEEDBACK_SSRCS = struct.Struct("!LL")
_aiortc_rtpfb_parse = RtcpRtpfbPacket.parse


def _parse_rtpfb(cls: type[RtcpRtpfbPacket], data: bytes, fmt: int) -> RtcpRtpfbPacket:
    """aiortc's ``RtcpRtpfbPacket.parse``, reading a generic NACK from its last FCI back
    until it has ``_nack_read_limit`` sequence numbers (in the packet's order, unmasked as
    aiortc gives them)."""
    if fmt != RTCP_RTPFB_NACK or not _nack_read_limit:
        return _aiortc_rtpfb_parse(data, fmt)
    if len(data) < 8 or len(data) % 4:
        raise ValueError("RTCP RTP feedback length is invalid")
    ssrc, media_ssrc = _FEEDBACK_SSRCS.unpack_from(data, 0)
    fcis: list[list[int]] = []
    count = 0
    for position in range(len(data) - 4, 7, -4):
        pid, blp = _FCI.unpack_from(data, position)
        fci = [pid]
        offset = 1
        while blp:
            if blp & 1:
                fci.append(pid + offset)
            blp >>= 1
            offset += 1
        fcis.append(fci)
        count += len(fci)
        if count >= _nack_read_limit:
            break
    lost = [number for fci in reversed(fcis) for number in fci]
    return cls(fmt=fmt, ssrc=ssrc, media_ssrc=media_ssrc, lost=lost)


def limit_nack_parsing(at_least: int) -> None:
    """Have aiortc read only the last ``at_least`` (or up to 16 more: whole FCIs) sequence
    numbers of each RTCP generic NACK in this process, or more if an earlier call asked.

    aiortc expands every FCI's 16-bit mask in Python before any handler sees the packet:
    ≈ 85 µs for a NACK naming 1,000 packets, the largest part of what a NACK-flooding
    viewer cost with its retransmission budget (see docs/BENCHMARKS.md, "NACK flood").
    Receivers list their losses oldest first, and the budget reads only the newest
    (``RetransmissionLimits.per_nack``) anyway."""
    global _nack_read_limit
    _nack_read_limit = max(_nack_read_limit, at_least)
    RtcpRtpfbPacket.parse = classmethod(_parse_rtpfb)  # type: ignore[method-assign,assignment]


def sender_rtt(sender: RTCRtpSender) -> float | None:
    """The round-trip time to the sender's remote peer in seconds, as aiortc estimates it
    from the receiver reports answering its sender reports; None before the first."""
    rtt: float | None = sender._RTCRtpSender__rtt  # type: ignore[attr-defined]
    return rtt


def send_sender_report(
    sender: RTCRtpSender, *, clock_rate: int | None = None
) -> tuple[int, float] | None:
    """Send ``sender``'s RTCP sender report now, as its own loop does every 0.5 to 1.5 s
    (same counters; aiortc reads the RTT of the answers to this one as to its own). Its
    ``lsr`` (what a receiver report block answering it echoes) and ``time.time()`` when
    sent; None when the sender has not started or sent no RTP yet.

    Without ``clock_rate`` it tells the last packet's NTP/RTP timestamp pair, as aiortc's
    own loop does, and None is returned when no RTP was sent since the last report (an
    answer could not be told from one to the last). With ``clock_rate`` (the RTP clock's,
    Hz) it tells the present: the NTP time now and the RTP timestamp extrapolated from the
    last packet's at that clock (RFC 3550, 6.4.1), so that an answer to it is told from
    any other even when the sender is idle (a paused video), and the sender's loop goes on
    from that pair: a report of an older one, arriving after it, would have the receiver
    answer that instead. While the sender stays idle its loop repeats the pair (the same
    ``lsr``): ``sender_report_sent_at`` tells when it last did."""
    if not sender._RTCRtpSender__started:  # type: ignore[attr-defined]
        return None
    ntp: int = sender._RTCRtpSender__ntp_timestamp  # type: ignore[attr-defined]
    rtp_timestamp: int = sender._RTCRtpSender__rtp_timestamp  # type: ignore[attr-defined]
    if not ntp:
        return None
    if clock_rate is not None:
        now = clock.current_ntp_time()
        rtp_timestamp = (rtp_timestamp + round((now - ntp) / (1 << 32) * clock_rate)) & 0xFFFFFFFF
        ntp = now
        count_sender_report(sender, ntp, rtp_timestamp, 0, 0)
    elif (ntp >> 16) & 0xFFFFFFFF == sender._RTCRtpSender__lsr:  # type: ignore[attr-defined]
        return None
    lsr = (ntp >> 16) & 0xFFFFFFFF
    packet = RtcpSrPacket(
        ssrc=sender._ssrc,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp,
            rtp_timestamp=rtp_timestamp,
            packet_count=sender._RTCRtpSender__packet_count & 0xFFFFFFFF,  # type: ignore[attr-defined]
            octet_count=sender._RTCRtpSender__octet_count & 0xFFFFFFFF,  # type: ignore[attr-defined]
        ),
    )
    sent_at = time.time()
    sender._RTCRtpSender__lsr = lsr  # type: ignore[attr-defined]
    sender._RTCRtpSender__lsr_time = sent_at  # type: ignore[attr-defined]
    task = asyncio.ensure_future(sender._send_rtcp([packet]))
    _reports_sending.add(task)  # held until sent (the loop keeps only weak references)
    task.add_done_callback(_reports_sending.discard)
    return lsr, sent_at


_reports_sending: set[asyncio.Future[None]] = set()


def on_sender_started(
    sender: RTCRtpSender, callback: Callable[[RTCRtpSendParameters], Awaitable[None]]
) -> None:
    """Call ``callback`` with the negotiated parameters once DTLS is up and the
    sender has started (aiortc calls ``send`` at that moment)."""
    original = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        await original(parameters)
        await callback(parameters)

    sender.send = send  # type: ignore[method-assign]


def intercept_sender_rtcp(sender: RTCRtpSender, handler: RtcpHandler) -> None:
    """Route RTCP feedback addressed to ``sender`` through ``handler`` first.

    ``handler`` returns True when it consumed the packet; anything else (receiver
    reports, REMB) goes on to aiortc for RTT and statistics.
    """
    original = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet: AnyRtcpPacket) -> None:
        if not await handler(packet):
            await original(packet)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def remb_bitrate(packet: AnyRtcpPacket) -> int | None:
    """The bitrate (bits/s) of a REMB (``goog-remb``), None for any other packet. aiortc's
    RTP router hands a REMB to every sender its FCI lists, and the sender applies it only
    to an encoder, which a viewer's sender never has: read here, it is the viewer's own
    receive-side estimate (``sfu.bandwidth``)."""
    if not isinstance(packet, RtcpPsfbPacket) or packet.fmt != RTCP_PSFB_APP:
        return None
    try:
        return unpack_remb_fci(packet.fci)[0]
    except ValueError:  # an application-layer feedback that is not a REMB
        return None


def sender_report_sent_at(sender: RTCRtpSender, lsr: int) -> float | None:
    """When (``time.time()``) ``sender`` last sent a report of ``lsr`` (its loop repeats
    an idle sender's last one; ``send_sender_report``), if it is still its last."""
    if lsr != sender._RTCRtpSender__lsr:  # type: ignore[attr-defined]
        return None
    sent_at: float = sender._RTCRtpSender__lsr_time  # type: ignore[attr-defined]
    return sent_at


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """The sender's media SSRC and RTX SSRC, as announced in its SDP."""
    return sender._ssrc, sender._rtx_ssrc


_DTLS_CONNECTED = _DtlsState.CONNECTED
# pylibsrtp's cffi binding: the libsrtp a session's context belongs to, for sfu.rtp_sender
SRTP_FFI: Any = _srtp_ffi
SRTP_PROTECT: Any = _srtp_lib.srtp_protect
SRTP_PROTECT_ADDRESS = int(
    _srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(_srtp_lib, "srtp_protect"))
)


def dtls_connected(dtls: RTCDtlsTransport) -> bool:
    """Whether ``dtls`` is connected (its SRTP sessions exist)."""
    return dtls._state is _DTLS_CONNECTED


def nominated_pairs(dtls: RTCDtlsTransport) -> dict[int, CandidatePair]:
    """The ICE pairs aioice nominated under ``dtls``, by component: the live dict, which
    changes when ICE moves to another pair."""
    pairs: dict[int, CandidatePair] = dtls.transport._connection._nominated
    return pairs


def transmit_srtp(dtls: RTCDtlsTransport) -> Session | None:
    """The SRTP session ``dtls`` protects outgoing RTP with; None before DTLS is up."""
    session: Session | None = dtls._tx_srtp
    return session


def srtp_context(session: Session) -> Any:
    """The libsrtp context (``srtp_t``) of a pylibsrtp session."""
    return session._srtp[0]


def srtp_context_address(session: Session) -> int:
    """``srtp_context(session)`` as an address, for code outside pylibsrtp's cffi."""
    return int(_srtp_ffi.cast("uintptr_t", session._srtp[0]))


def datagram_socket(transport: Any) -> socket.socket | None:
    """The socket of asyncio's own datagram transport; None for any other (uvloop's,
    aioice's TURN transport), which is then sent through with ``sendto`` as is."""
    if isinstance(transport, _ASYNCIO_DATAGRAM_TRANSPORT):
        sock: socket.socket = transport._sock
        return sock
    return None


def transport_queues(transport: Any) -> bool:
    """Whether asyncio's datagram ``transport`` holds datagrams the kernel refused."""
    return bool(transport._buffer)


def count_transport_sent(dtls: RTCDtlsTransport, protected_bytes: int, packets: int) -> None:
    """Count datagrams sent around ``dtls`` in its byte and packet counters (getStats)."""
    dtls._RTCDtlsTransport__tx_bytes += protected_bytes  # type: ignore[attr-defined]
    dtls._RTCDtlsTransport__tx_packets += packets  # type: ignore[attr-defined]


def count_sender_report(
    sender: RTCRtpSender, ntp_time: int, rtp_timestamp: int, payload_bytes: int, packets: int
) -> None:
    """Account RTP sent around ``sender`` in its next RTCP sender report, as its own
    ``_run_rtp`` (idle in the SFU) would: the NTP/RTP timestamp pair and the counters."""
    sender._RTCRtpSender__ntp_timestamp = ntp_time  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count += payload_bytes  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count += packets  # type: ignore[attr-defined]


def gatherer_connection(gatherer: RTCIceGatherer) -> Connection:
    """The aioice ``Connection`` an ICE gatherer gathers for."""
    connection: Connection = gatherer._connection
    return connection


def ice_nominated_pairs(connection: Connection) -> dict[int, CandidatePair]:
    """The pairs an aioice ``Connection`` nominated, by component (the live dict)."""
    pairs: dict[int, CandidatePair] = connection._nominated
    return pairs


def forget_consent_task(connection: Connection) -> None:
    """Make a consent check loop ending on its own not cancelled by the ``close()`` it
    calls (aioice cancels the task it holds, which would be the caller)."""
    connection._query_consent_task = None


def add_ice_protocols(connection: Connection, protocols: Sequence[StunProtocol]) -> None:
    """Have ``connection`` check, answer on and close sockets bound outside aioice."""
    connection._protocols += protocols


def renew_ice_credentials(
    transport: RTCIceTransport, *, local: tuple[str, str], remote: tuple[str, str]
) -> None:
    """Give an ICE transport new local and remote credentials (ufrag, pwd) and have it
    accept remote candidates again: what an ICE restart changes, aiortc having none. A
    shared socket's dispatcher learns the new local ufrag (``MuxedStunProtocol``)."""
    connection: Connection = transport._connection
    connection._local_username, connection._local_password = local
    connection.remote_username, connection.remote_password = remote
    connection._remote_candidates_end = False
    transport.iceGatherer._remote_candidates_end = False
    for protocol in connection._protocols:
        if isinstance(protocol, MuxedStunProtocol):
            protocol.mux.rekey(protocol)


def set_local_ufrag(connection: Connection, ufrag: str) -> None:
    """Give ``connection`` another local ufrag, before its local description is written
    (aiortc reads it again from the connection after gathering)."""
    connection._local_username = ufrag


def muxed(protocol: StunProtocol) -> bool:
    """Whether ``protocol`` sends on the process's shared socket (``sfu.ice_mux``)."""
    return isinstance(protocol, MuxedStunProtocol)


class IceMux(Protocol):
    """What a ``MuxedStunProtocol`` tells the dispatcher of its shared socket
    (``sfu.ice_mux.UdpMux``)."""

    def expect(self, transaction_id: bytes, protocol: MuxedStunProtocol) -> None: ...

    def unexpect(self, transaction_id: bytes) -> None: ...

    def rekey(self, protocol: MuxedStunProtocol) -> None: ...

    def detach(self, protocol: MuxedStunProtocol) -> None: ...


class MuxedStunProtocol(StunProtocol):
    """aioice's protocol (one local candidate's socket, to a ``Connection``) for one
    connection on a UDP socket every connection of the process shares (``sfu.ice_mux``).

    The dispatcher of the shared socket hands it what is this connection's:
    ``datagram_received`` as aioice's own socket would, or, for what is not STUN,
    ``deliver`` (aioice's ``data_received`` without its STUN parse). Sends go out on the
    shared transport with the destination address, as aioice's always do. What changes:
    each STUN request it sends tells the dispatcher its transaction id, so that the
    response comes back here from any address (a STUN server, a candidate that never
    sent a check); and closing it leaves the shared socket open and takes the
    connection's ufrag and addresses off the dispatcher."""

    def __init__(
        self,
        connection: Connection,
        mux: IceMux,
        transport: asyncio.DatagramTransport,
        local_candidate: Any,
    ) -> None:
        super().__init__(connection)
        self.mux = mux
        self.transport = transport
        self.local_candidate = local_candidate
        # the local ufrag the dispatcher knows it by (renewed by an ICE restart)
        self.ufrag: str = connection.local_username

    @property
    def password(self) -> bytes:
        """The connection's local ICE password: what a check addressed to it is signed with."""
        password: str = self.receiver.local_password
        return password.encode("utf8")

    def deliver(self, data: bytes) -> None:
        """Hand the connection a datagram that is not STUN (DTLS, SRTP, SRTCP)."""
        self.receiver.data_received(data, self.local_candidate.component)

    async def request(
        self,
        request: Any,
        addr: tuple[str, int],
        integrity_key: bytes | None = None,
        retransmissions: int | None = None,
    ) -> Any:
        transaction_id: bytes = request.transaction_id
        self.mux.expect(transaction_id, self)
        try:
            return await super().request(request, addr, integrity_key, retransmissions)
        finally:
            self.mux.unexpect(transaction_id)

    async def close(self) -> None:
        self.mux.detach(self)
        self.connection_lost(None)


def drop_bitrate_estimator(receiver: RTCRtpReceiver) -> None:
    """Take away a receiver's remote bitrate estimator (aiortc then sends no REMB for it).

    aiortc gives every video receiver one, even on a connection that only sends: a one-second
    window of 1,000 one-millisecond buckets, each a Python object. A viewer's connection never
    receives media, so on an SFU with 100 viewers that is 100,000 objects of no use, ≈ 90 KB
    per viewer, and half of what the cyclic garbage collector walks in a full collection, which
    stops every viewer's forwarding while it runs (see docs/BENCHMARKS.md, "What was tried").
    aiortc checks for None before it uses the estimator.
    """
    setattr(receiver, _BITRATE_ESTIMATOR_ATTR, None)


async def send_remb(receiver: RTCRtpReceiver, bitrate: int, media_ssrcs: list[int]) -> None:
    """Tell the remote sender of ``media_ssrcs`` to send at most ``bitrate`` bit/s in all
    (RTCP REMB, from the receiver's RTCP SSRC, as aiortc's own estimator sends it)."""
    ssrc: int | None = getattr(receiver, _RTCP_SSRC_ATTR)
    if ssrc is not None:
        packet = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, media_ssrcs)
        )
        await receiver._send_rtcp(packet)


def received_stream_counters(receiver: RTCRtpReceiver) -> dict[int, tuple[int, int]]:
    """(packets expected, packets received) of each SSRC the receiver took RTP from, as its
    receiver reports count them: by sequence number, before RTX is unwrapped (a
    retransmission counts for its RTX SSRC), duplicates included."""
    streams: dict[int, Any] = getattr(receiver, _REMOTE_STREAMS_ATTR)
    return {ssrc: (s.packets_expected, s.packets_received) for ssrc, s in streams.items()}


class _DaemonThreading:
    """``threading`` as aiortc's receiver module sees it: the decoder thread each receiver
    starts is a daemon. An SFU receiver's decoder idles (``tap_receiver``), and one whose
    peer connection was never closed (a process stopping with sessions still open) must not
    keep the process from exiting: Python waits for every other thread at exit."""

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)

    @staticmethod
    def Thread(*args: Any, **kwargs: Any) -> threading.Thread:
        return threading.Thread(*args, **{**kwargs, "daemon": True})


setattr(_receiver_module, "threading", _DaemonThreading())  # noqa: B010 (a module's global)


# aioice's ``Connection.get_event`` returns None at once for a closed connection, and
# aiortc's ``RTCIceTransport._monitor`` loops on it until it sees ``ConnectionClosed``: a
# connection closed before its monitor first waited (a client that drops a session as it
# connects) made that loop spin forever without yielding, and the whole server hung at
# 100 % CPU (found by tests/fuzz under load). A closed connection's next event is
# ``ConnectionClosed`` here, always.
AIOICE_GET_EVENT = Connection.get_event


async def _get_event_or_closed(self: Connection) -> Any:
    event = await AIOICE_GET_EVENT(self)
    return ConnectionClosed() if event is None else event


Connection.get_event = _get_event_or_closed  # type: ignore[method-assign]


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc``; never raises, frees its sockets even when aiortc cannot, and leaves
    none of aiortc's tasks for it behind.

    aiortc's ``close()`` stops each transceiver's transports in turn and raises halfway if a
    remote description left one without a transport; the rest would keep their UDP
    sockets, and a later ``close()`` would wait forever on a future never completed. Then
    every transport it still holds is stopped one by one and the connection marked closed.

    aiortc also runs ``RTCPeerConnection.__connect`` as a task nobody awaits: closed while
    it checks connectivity, it goes on to a transport closed meanwhile and may raise
    (``InvalidStateError``), which asyncio would log at ERROR ("Task exception was never
    retrieved") whenever a client drops a session it just opened. Close waits for it
    (``CLOSE_TASK_WAIT_SECONDS`` at most) and takes what it raised.
    """
    connecting = [task for task in asyncio.all_tasks() if _connects(task, pc)]
    try:
        await pc.close()
    except Exception:
        logger.debug("aiortc could not close a peer connection; stopping its transports")
        for transport in list(getattr(pc, _PC_DTLS_TRANSPORTS_ATTR)):
            with contextlib.suppress(Exception):
                await transport.stop()
        for transport in list(getattr(pc, _PC_ICE_TRANSPORTS_ATTR)):
            with contextlib.suppress(Exception):
                await transport.stop()
        closed: asyncio.Future[bool] | None = getattr(pc, _PC_CLOSED_ATTR)
        if closed is not None and not closed.done():
            closed.set_result(True)
        pc.remove_all_listeners()
    for task in connecting:
        task.add_done_callback(_take_exception)
    if connecting:
        await asyncio.wait(connecting, timeout=CLOSE_TASK_WAIT_SECONDS)


def _connects(task: asyncio.Task[Any], pc: RTCPeerConnection) -> bool:
    coroutine = task.get_coro()
    frame = getattr(coroutine, "cr_frame", None)
    return (
        getattr(coroutine, "__qualname__", "") == _PC_CONNECT_QUALNAME
        and frame is not None
        and frame.f_locals.get("self") is pc
    )


def _take_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug(
            "aiortc's connect task of a closed peer connection failed: %r", task.exception()
        )


# The SFU's last DTLS flight again after 100, 200 and 400 ms without an answer, before
# OpenSSL's own timer (1 s): a flight lost, or dropped by a peer not reading DTLS yet, costs
# a tenth of the time.
DTLS_EARLY_RESENDS = (0.1, 0.2, 0.4)
_DTLS_FIRST_BYTES = range(20, 64)


def hasten_dtls_handshake(dtls: RTCDtlsTransport) -> None:
    """Shorten the transport's DTLS handshake where a peer would leave it waiting on a timer.

    As DTLS client (the SFU answering an offer: WHIP publishers, WHEP viewers) it sends its
    ClientHello twice at once. FFmpeg's WHIP muxer (DTLS server, ``a=setup:passive``) reads
    its socket for ICE until a DTLS datagram arrives, then hands the handshake to OpenSSL,
    which reads the socket again: the datagram that woke it, the ClientHello, is lost, and
    the handshake waited for a re-send (OpenSSL's 1 s timer, or the early re-sends below).
    With the copy beside it, OpenSSL reads the copy. Any other server drops the copy as a
    replayed record (the same epoch and sequence number, RFC 6347 4.1.2.6).

    While the handshake waits for the peer it re-sends the last flight on a short timer
    (``DTLS_EARLY_RESENDS``) instead of OpenSSL's 1 s initial retransmission timeout
    (aiortc's pyOpenSSL cannot set DTLS_set_timer_cb). Both hooks remove themselves once
    the handshake is over, so the media path runs aioice's own methods."""
    ice = dtls.transport
    recv = ice._recv
    send = ice._send
    flight: list[bytes] = []
    answered = [True]
    resends = list(DTLS_EARLY_RESENDS)
    first_datagram = [True]

    def handshaking() -> bool:
        if dtls._state in (_DtlsState.NEW, _DtlsState.CONNECTING):
            return True
        ice._recv, ice._send = recv, send
        return False

    async def send_recording(data: bytes) -> None:
        if not (handshaking() and data and data[0] in _DTLS_FIRST_BYTES):
            await send(data)
            return
        if answered[0]:
            flight.clear()
            answered[0] = False
        flight.append(data)
        await send(data)
        if first_datagram[0] and dtls._role == "client":
            await send(data)
        first_datagram[0] = False

    async def recv_resending() -> bytes:
        while handshaking() and flight and not answered[0] and resends:
            try:
                data = await asyncio.wait_for(recv(), timeout=resends[0])
            except TimeoutError:
                logger.debug("DTLS flight sent again: no answer within %.1f s", resends.pop(0))
                for datagram in list(flight):
                    await send(datagram)
                continue
            answered[0] = True
            return data
        answered[0] = True
        return await recv()

    ice._send = send_recording
    ice._recv = recv_resending


def hasten_dtls_handshakes(pc: RTCPeerConnection) -> None:
    """``hasten_dtls_handshake`` for each DTLS transport of ``pc`` not yet started."""
    for dtls in getattr(pc, _PC_DTLS_TRANSPORTS_ATTR):
        if dtls._state == _DtlsState.NEW and not getattr(dtls, "_onair_hastened", False):
            dtls._onair_hastened = True
            hasten_dtls_handshake(dtls)


# --- what a join costs ---------------------------------------------------------------------
# aiortc makes a new ECDSA key and a self-signed certificate for every RTCPeerConnection, in
# its constructor, and hashes the certificate three ways whenever it writes a description:
# a third of a millisecond of CPU per viewer joining. A server's certificate identifies the
# server, not the session (mediasoup and Janus use one per process): every peer connection
# made here shares one, renewed a day before it expires (aiortc's last 30 days).

CERTIFICATE_RENEW_BEFORE = datetime.timedelta(days=1)


class _SharedCertificate(RTCCertificate):
    """A certificate whose fingerprints are computed once."""

    _fingerprints: list[RTCDtlsFingerprint] | None = None

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        return list(self._fingerprints)


_shared_certificate: _SharedCertificate | None = None


def shared_certificate() -> RTCCertificate:
    """The process's DTLS certificate (made on first use, renewed before it expires)."""
    global _shared_certificate
    now = datetime.datetime.now(datetime.UTC)
    if _shared_certificate is None or _shared_certificate.expires - now < CERTIFICATE_RENEW_BEFORE:
        _shared_certificate = _SharedCertificate.generateCertificate()
    return _shared_certificate


class _GivenCertificate:
    """``RTCCertificate`` as aiortc's peer connection module sees it while one is made:
    ``generateCertificate`` hands out the shared certificate."""

    def __init__(self, certificate: RTCCertificate) -> None:
        self._certificate = certificate

    def generateCertificate(self) -> RTCCertificate:
        return self._certificate


def new_peer_connection(configuration: RTCConfiguration) -> RTCPeerConnection:
    """An ``RTCPeerConnection`` with the process's shared DTLS certificate."""
    given = _GivenCertificate(shared_certificate())
    setattr(_pc_module, "RTCCertificate", given)  # noqa: B010 (a module's global)
    try:  # the constructor is synchronous: no other code runs while the name is swapped
        return RTCPeerConnection(configuration)
    finally:
        setattr(_pc_module, "RTCCertificate", RTCCertificate)  # noqa: B010


def _no_estimator() -> None:
    return None


def add_send_transceiver(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpTransceiver:
    """``pc.addTransceiver(track, direction="sendonly")`` whose receiver never gets the
    remote bitrate estimator ``drop_bitrate_estimator`` would take away: building its 1,000
    buckets was a tenth of a viewer's join."""
    setattr(_receiver_module, "RemoteBitrateEstimator", _no_estimator)  # noqa: B010
    try:  # synchronous, as above
        return pc.addTransceiver(track, direction="sendonly")
    finally:
        setattr(_receiver_module, "RemoteBitrateEstimator", _REMOTE_BITRATE_ESTIMATOR)  # noqa: B010


_REMOTE_BITRATE_ESTIMATOR = _receiver_module.RemoteBitrateEstimator

# aioice lists the host's network interfaces (ifaddr: a netlink dump) for every connection it
# gathers candidates for; a join's second-largest cost after the certificate. The list is
# kept for HOST_ADDRESSES_SECONDS: an address added or removed is seen by the connections
# gathered after that.
HOST_ADDRESSES_SECONDS = 5.0
AIOICE_GET_HOST_ADDRESSES = _aioice_ice.get_host_addresses
_host_addresses: dict[tuple[bool, bool], tuple[float, list[str]]] = {}


def _cached_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    now = time.monotonic()
    cached = _host_addresses.get((use_ipv4, use_ipv6))
    if cached is None or now - cached[0] > HOST_ADDRESSES_SECONDS:
        cached = (now, AIOICE_GET_HOST_ADDRESSES(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
        _host_addresses[(use_ipv4, use_ipv6)] = cached
    return list(cached[1])


setattr(_aioice_ice, "get_host_addresses", _cached_host_addresses)  # noqa: B010
