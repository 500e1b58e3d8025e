"""The non-decoding viewer: a recvonly aiortc peer that decrypts and counts RTP, nothing more.

Every aiortc/aioice touch of the bench's viewer lives here. The load generator must stay far
below one core with a hundred viewers, and aiortc's receive path (a queue hop per packet,
packet parsing, the receiver's statistics and bitrate estimator, depacketizing) costs about
1-2 % of a core per viewer. So once DTLS is up, each SRTP packet is taken from the ICE
connection as it arrives, decrypted with the viewer's own SRTP session (proof that the
server sent this viewer valid media) and counted. aiortc's receivers never see RTP, so
nothing is ever decoded; DTLS, ICE consent freshness and RTCP still run through aiortc.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp

from sfu.keyframe import is_vp8_keyframe_start
from testpeers.aiortc_hooks import send_nack

TRACE_KEY_BYTES = 8
# Only video packets this large are traced: the Opus sine repeats itself byte for byte.
TRACE_MIN_BYTES = 500


def trace_key(packet: bytes) -> bytes | None:
    """A packet's identity across a forwarder: its last payload bytes, which none rewrites."""
    return packet[-TRACE_KEY_BYTES:] if len(packet) >= TRACE_MIN_BYTES else None


@dataclass
class Counters:
    packets: int = 0
    octets: int = 0
    srtp_errors: int = 0
    first_packet_at: float | None = None
    # The first packet of the first VP8 keyframe (the answer's video payload type, once known).
    first_keyframe_at: float | None = None
    keyframe_pt: int | None = None
    # While tracing: arrival time by trace_key, for the forwarding-latency measurement.
    arrivals: dict[bytes, float] | None = None
    # For a NACK-flooding viewer: the last sequence number received, by SSRC.
    sequence_numbers: dict[int, int] | None = None


def _is_rtp(data: bytes) -> bool:
    # RFC 7983 demultiplexing, then RFC 5761: RTCP packet types are 192-223.
    return len(data) > 12 and 127 < data[0] < 192 and not 192 <= data[1] <= 223


# The kernel's receive time of the last datagram read from a socket (struct timespec,
# CLOCK_REALTIME); <asm-generic/sockios.h>
_SIOCGSTAMPNS = 0x8907
_TIMESPEC = struct.Struct("@qq")
_SEQUENCE_NUMBER = struct.Struct("!H")
_SSRC = struct.Struct("!I")


def _rtp_payload(packet: bytes) -> bytes:
    """The payload of a (decrypted) RTP packet: after its CSRCs and header extension."""
    start = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= start + 4:
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    return packet[start:]


def _kernel_arrival(sock: socket.socket) -> float | None:
    """When the kernel queued the datagram just read from ``sock`` for this process, on the
    ``time.monotonic`` clock: the forwarding latency ends there, not after this process's
    own queue (one Python process reads every viewer's socket, and a keyframe sent to 100
    viewers is thousands of datagrams for it to decrypt)."""
    try:
        seconds, nanoseconds = _TIMESPEC.unpack(
            fcntl.ioctl(sock.fileno(), _SIOCGSTAMPNS, bytes(_TIMESPEC.size))
        )
    except OSError:
        return None
    return seconds + nanoseconds / 1e9 - (time.time() - time.monotonic())


def _count_at_socket(dtls: RTCDtlsTransport, counters: Counters) -> None:
    """Count SRTP as each datagram arrives, before aioice tries to parse it as STUN."""
    for protocol in dtls.transport._connection._protocols:
        forward = protocol.datagram_received
        sock = protocol.transport.get_extra_info("socket")
        _kernel_arrival(sock)  # the first call has the kernel time-stamp what comes next

        def datagram_received(
            data: bytes,
            addr: tuple[Any, ...],
            forward: Callable[..., None] = forward,
            sock: socket.socket = sock,
        ) -> None:
            srtp = dtls._rx_srtp
            if srtp is None or not _is_rtp(data):
                forward(data, addr)
                return
            arrived = time.monotonic()
            try:
                packet = srtp.unprotect(data)
            except pylibsrtp.Error:
                counters.srtp_errors += 1
                return
            if counters.first_packet_at is None:
                counters.first_packet_at = arrived
            if (
                counters.first_keyframe_at is None
                and packet[1] & 0x7F == counters.keyframe_pt
                and is_vp8_keyframe_start(_rtp_payload(packet))
            ):
                counters.first_keyframe_at = arrived
            counters.packets += 1
            counters.octets += len(packet)
            if counters.arrivals is not None and (key := trace_key(packet)) is not None:
                counters.arrivals[key] = _kernel_arrival(sock) or arrived
            if counters.sequence_numbers is not None:
                (ssrc,) = _SSRC.unpack_from(packet, 8)
                (counters.sequence_numbers[ssrc],) = _SEQUENCE_NUMBER.unpack_from(packet, 2)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign,assignment]


def _vp8_payload_type(sdp: str) -> int | None:
    for media in SessionDescription.parse(sdp).media:
        for codec in media.rtp.codecs if media.kind == "video" else ():
            if codec.mimeType.lower() == "video/vp8":
                return codec.payloadType
    return None


def new_peer_connection() -> RTCPeerConnection:
    # No ICE servers at all: aiortc's default would ask a public STUN server.
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


# Sends an SDP offer to the server and returns its answer.
OfferExchange = Callable[[str], Awaitable[str]]


@dataclass
class Viewer:
    index: int
    pc: RTCPeerConnection = field(default_factory=new_peer_connection)
    counters: Counters = field(default_factory=Counters)
    started_at: float = field(default_factory=time.monotonic)
    error: str | None = None
    # A decoding viewer leaves RTP to aiortc, which decodes it: for join → first decoded frame.
    decode: bool = False
    first_frame_at: asyncio.Future[float] | None = None
    video_ssrc: int | None = None  # the server's, once known (``nack_last``)

    def __post_init__(self) -> None:
        if not self.decode:
            return
        self.first_frame_at = asyncio.get_running_loop().create_future()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._decoding = asyncio.ensure_future(self._first_frame(track))

    async def _first_frame(self, track: MediaStreamTrack) -> None:
        await track.recv()
        assert self.first_frame_at is not None
        if not self.first_frame_at.done():
            self.first_frame_at.set_result(time.monotonic())

    @property
    def connected(self) -> bool:
        return self.pc.connectionState == "connected"

    def _count(self) -> None:
        if self.decode:
            return
        transports = {
            id(t.receiver.transport): t.receiver.transport for t in self.pc.getTransceivers()
        }
        for transport in transports.values():
            _count_at_socket(transport, self.counters)

    async def watch_by_offer(self, exchange: OfferExchange) -> None:
        """WHEP-style: the viewer offers recvonly audio and video, the server answers."""
        await self.prepare_offer()
        await self.request(exchange)

    async def prepare_offer(self) -> None:
        """The viewer's recvonly offer, candidates gathered, not sent yet."""
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._count()

    async def request(self, exchange: OfferExchange) -> None:
        """Send the prepared offer; ICE and DTLS start with the answer."""
        answer = await exchange(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self.counters.keyframe_pt = _vp8_payload_type(answer)

    async def answer(self, offer: str) -> str:
        """Janus-style: the server offers, the viewer answers."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._count()
        return str(self.pc.localDescription.sdp)

    async def nack_last(self, count: int) -> bool:
        """NACK the last ``count`` video packets received, in one RTCP NACK, as a hostile
        viewer may (``bench.nack``); False before any video packet arrived. Needs
        ``counters.sequence_numbers`` set to a dict before the viewer joins."""
        assert self.counters.sequence_numbers is not None
        video = next(t for t in self.pc.getTransceivers() if t.kind == "video")
        if self.video_ssrc is None:
            description = SessionDescription.parse(self.pc.remoteDescription.sdp)
            self.video_ssrc = next(m.ssrc[0].ssrc for m in description.media if m.kind == "video")
        ssrc = self.video_ssrc
        newest = self.counters.sequence_numbers.get(ssrc)
        if newest is None:
            return False
        lost = [(newest - n) & 0xFFFF for n in range(count - 1, -1, -1)]
        await send_nack(video.receiver, ssrc, lost)
        return True

    async def add_remote_candidate(self, candidate: dict[str, Any]) -> None:
        if candidate.get("completed") or not candidate.get("candidate"):
            return
        parsed = candidate_from_sdp(candidate["candidate"].removeprefix("candidate:"))
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self.pc.addIceCandidate(parsed)

    async def close(self) -> None:
        await self.pc.close()


async def wait_connected(viewer: Viewer, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if viewer.pc.connectionState == "connected" and viewer.counters.packets:
            return True
        if viewer.pc.connectionState in ("failed", "closed"):
            return False
        await asyncio.sleep(0.05)
    return False
