"""The aiortc internals sfu/aiortc_adapter.py relies on. If aiortc changes, these fail
first, and name what moved."""

import asyncio
import errno
import importlib.metadata
import inspect
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiortc import (
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtpPacket,
)
from pylibsrtp import SRTP_MAX_TRAILER_LEN

from sfu import aiortc_adapter
from sfu.testing import client_configuration

VP8 = next(c for c in CODECS["video"] if c.mimeType == "video/VP8")
RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())


def test_aiortc_is_the_pinned_version() -> None:
    assert importlib.metadata.version("aiortc") == "1.16.0"


@pytest.fixture
async def pc() -> AsyncIterator[RTCPeerConnection]:
    pc = RTCPeerConnection(client_configuration())
    yield pc
    await pc.close()


def test_the_private_members_used_exist(pc: RTCPeerConnection) -> None:
    transceiver = pc.addTransceiver("video")
    receiver, sender = transceiver.receiver, transceiver.sender
    jitter_buffer = receiver._RTCRtpReceiver__jitter_buffer
    assert callable(jitter_buffer.add)
    assert list(inspect.signature(receiver._handle_rtp_packet).parameters) == [
        "packet",
        "arrival_time_ms",
    ]
    assert list(inspect.signature(receiver._send_rtcp_pli).parameters) == ["media_ssrc"]
    assert list(inspect.signature(sender._handle_rtcp_packet).parameters) == ["packet"]
    assert isinstance(sender._ssrc, int)
    assert isinstance(sender._rtx_ssrc, int)
    assert aiortc_adapter.sender_report_state(sender) == (0, 0, 0, 0)
    transport = sender.transport
    assert list(inspect.signature(transport._handle_rtp_data).parameters) == [
        "data",
        "arrival_time_ms",
    ]
    assert aiortc_adapter.decoder_thread(receiver) is None


async def test_tap_receiver_delivers_packets_and_assembles_no_frame(
    pc: RTCPeerConnection,
) -> None:
    receiver: RTCRtpReceiver = pc.addTransceiver("video").receiver
    receiver._RTCRtpReceiver__codecs[VP8.payloadType] = VP8
    seen: list[RtpPacket] = []

    async def on_packet(packet: RtpPacket) -> None:
        seen.append(packet)

    aiortc_adapter.tap_receiver(receiver, on_packet, decode=False)
    for sequence_number, marker in ((1, 0), (2, 1), (3, 0)):
        packet = RtpPacket(
            payload_type=VP8.payloadType,
            sequence_number=sequence_number,
            timestamp=sequence_number // 3 * 3000,
            ssrc=1234,
            marker=marker,
            payload=b"\x10\x00\x9d\x01\x2a",
        )
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)

    assert [p.sequence_number for p in seen] == [1, 2, 3]
    decoder_queue = receiver._RTCRtpReceiver__decoder_queue
    assert decoder_queue.empty()


async def test_send_pli_uses_the_receivers_rtcp_path(pc: RTCPeerConnection) -> None:
    receiver = pc.addTransceiver("video").receiver
    sent: list[bytes] = []

    async def send_rtp(data: bytes) -> None:
        sent.append(data)

    receiver.transport._send_rtp = send_rtp  # type: ignore[method-assign]
    await aiortc_adapter.send_pli(receiver, 4321)
    assert len(sent) == 1
    assert sent[0][1] == 206  # RTCP payload-specific feedback
    assert sent[0][0] & 0x1F == RTCP_PSFB_PLI


async def test_intercept_sender_rtcp_sees_feedback_and_passes_the_rest(
    pc: RTCPeerConnection,
) -> None:
    sender: RTCRtpSender = pc.addTransceiver("video").sender
    seen: list[AnyRtcpPacket] = []

    async def handler(packet: AnyRtcpPacket) -> bool:
        seen.append(packet)
        return isinstance(packet, RtcpRtpfbPacket)

    aiortc_adapter.intercept_sender_rtcp(sender, handler)
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc)
    nack.lost = [5]
    await sender._handle_rtcp_packet(nack)
    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1))
    await sender._handle_rtcp_packet(
        RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc)
    )
    assert [type(p) for p in seen] == [RtcpRtpfbPacket, RtcpRrPacket, RtcpPsfbPacket]


async def test_on_sender_started_reports_the_negotiated_parameters(
    pc: RTCPeerConnection,
) -> None:
    sender = pc.addTransceiver("video").sender
    started: list[RTCRtpSendParameters] = []

    async def on_started(parameters: RTCRtpSendParameters) -> None:
        started.append(parameters)

    aiortc_adapter.on_sender_started(sender, on_started)
    parameters = RTCRtpSendParameters(codecs=[VP8], muxId="0")
    await sender.send(parameters)
    await sender.stop()
    assert started == [parameters]


async def test_spy_codec_factories_sees_decoders_and_encoders() -> None:
    decoders: list[tuple[str, threading.Thread]] = []
    encoders: list[tuple[str, RTCRtpSender | None]] = []
    with aiortc_adapter.spy_codec_factories(
        lambda codec, thread: decoders.append((codec.mimeType, thread)),
        lambda codec, sender: encoders.append((codec.mimeType, sender)),
    ):
        import aiortc.rtcrtpreceiver
        import aiortc.rtcrtpsender

        await asyncio.to_thread(aiortc.rtcrtpreceiver.get_decoder, VP8)
        aiortc.rtcrtpsender.get_encoder(VP8)
    assert [m for m, _ in decoders] == ["video/VP8"]
    assert decoders[0][1] is not threading.current_thread()
    assert encoders == [("video/VP8", None)]
    assert aiortc.rtcrtpreceiver.get_decoder.__module__ == "aiortc.codecs"


async def test_filter_incoming_rtp_drops_what_it_is_told(pc: RTCPeerConnection) -> None:
    transport = pc.addTransceiver("video").receiver.transport
    delivered: list[bytes] = []

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        delivered.append(data)

    transport._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    aiortc_adapter.filter_incoming_rtp(transport, lambda data: data != b"drop")
    await transport._handle_rtp_data(b"keep", 0)
    await transport._handle_rtp_data(b"drop", 0)
    assert delivered == [b"keep"]


def test_the_members_the_direct_sender_uses_exist(pc: RTCPeerConnection) -> None:
    import pylibsrtp
    from aioice.ice import CandidatePair
    from aiortc.rtcdtlstransport import State
    from pylibsrtp._binding import lib

    sender = pc.addTransceiver("video").sender
    dtls = sender.transport
    assert dtls._state is State.NEW
    assert dtls._tx_srtp is None
    assert dtls._RTCDtlsTransport__tx_bytes == 0
    assert dtls._RTCDtlsTransport__tx_packets == 0
    assert dtls.transport._connection._nominated == {}
    assert list(inspect.signature(CandidatePair).parameters) == ["protocol", "remote_candidate"]
    assert isinstance(CandidatePair.remote_addr, property)
    session = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=bytes(30),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    assert session._srtp[0] is not None
    assert callable(lib.srtp_protect)
    assert aiortc_adapter.DirectRtpSender(sender).send(bytes(100), 1, 2, 3, 4, 88) == 0
    assert aiortc_adapter.sender_report_state(sender) == (0, 0, 0, 0)


async def _connect(sending: RTCPeerConnection, receiving: RTCPeerConnection) -> None:
    await sending.setLocalDescription(await sending.createOffer())
    await receiving.setRemoteDescription(sending.localDescription)
    await receiving.setLocalDescription(await receiving.createAnswer())
    await sending.setRemoteDescription(receiving.localDescription)
    for _ in range(200):
        if sending.connectionState == receiving.connectionState == "connected":
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the peers did not connect")


async def test_direct_sender_delivers_protected_rtp_with_the_given_header(
    pc: RTCPeerConnection,
) -> None:
    from sfu.viewer import _IdleTrack

    sender = pc.addTransceiver(_IdleTrack("video"), direction="sendonly").sender
    remote = RTCPeerConnection(client_configuration())
    try:
        remote.addTransceiver("video", direction="recvonly")
        arrived: list[bytes] = []

        def keep(data: bytes) -> bool:
            arrived.append(data)
            return False

        await _connect(pc, remote)
        aiortc_adapter.filter_incoming_rtp(remote.getTransceivers()[0].receiver.transport, keep)
        direct = aiortc_adapter.DirectRtpSender(sender)
        template = RtpPacket(payload_type=VP8.payloadType, payload=b"\x10" + bytes(999))
        serialized = template.serialize()
        sent = [
            direct.send(serialized, 7 + i, 90000 * i, sender._ssrc, (5 + i) << 32, 1000)
            for i in range(3)
        ]
        assert sent == [len(serialized)] * 3
        assert direct._socket is not None  # asyncio's transport: straight to its socket
        # the next sender report carries the last packet's NTP/RTP pair and the counts
        assert aiortc_adapter.sender_report_state(sender) == (7 << 32, 180000, 3000, 3)
        for _ in range(100):
            if len(arrived) == 3:
                break
            await asyncio.sleep(0.01)
        packets = [RtpPacket.parse(data) for data in arrived]
        assert [(p.sequence_number, p.timestamp, p.ssrc) for p in packets] == [
            (7 + i, 90000 * i, sender._ssrc) for i in range(3)
        ]
        assert all(p.payload == template.payload for p in packets)
        stats = await pc.getStats()
        transport_stats = next(s for s in stats.values() if s.type == "transport")
        assert transport_stats.packetsSent >= 3
        assert direct.send_packet(packets[0].serialize()) > 0
        receiving = remote.getTransceivers()[0].receiver.transport
        aiortc_adapter.enlarge_receive_buffers(receiving, 2**20)
        rmem_max = RMEM_MAX
        for protocol in receiving.transport._connection._protocols:
            sock = protocol.transport.get_extra_info("socket")
            # Linux doubles the request for its bookkeeping, and caps it at rmem_max
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(2**20, rmem_max)
        await pc.close()
        assert direct.send(serialized, 10, 0, sender._ssrc, 8 << 32, 1000) == 0
    finally:
        await remote.close()


# DirectRtpSender's batched sends (UDP GSO) and drain_datagrams, between real peers

UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)


@dataclass
class _Link:
    """A sending peer's video and audio senders (bundled on one DTLS transport), each with
    a ``DirectRtpSender``, connected to a receiving peer over this machine's address."""

    pc: RTCPeerConnection
    remote: RTCPeerConnection
    video_sender: RTCRtpSender
    audio_sender: RTCRtpSender
    video: aiortc_adapter.DirectRtpSender
    audio: aiortc_adapter.DirectRtpSender
    # the RTP the receiving peer decrypted, in the order it did (SRTP authenticates each
    # datagram: one cut at the wrong place is dropped, not decrypted)
    arrived: list[bytes] = field(default_factory=list)
    # whether the receiving peer's receivers also get them (else only ``arrived`` does)
    deliver: bool = False

    @property
    def receiving(self) -> RTCDtlsTransport:
        transport: RTCDtlsTransport = self.remote.getTransceivers()[0].receiver.transport
        return transport

    def payload_type(self, sender: RTCRtpSender) -> int:
        return _payload_type(next(t for t in self.pc.getTransceivers() if t.sender is sender))


def _payload_type(transceiver: RTCRtpTransceiver) -> int:
    """The payload type of the transceiver's negotiated codec."""
    payload_type = transceiver._codecs[0].payloadType
    assert payload_type is not None
    return payload_type


@pytest.fixture
async def link(pc: RTCPeerConnection) -> AsyncIterator[_Link]:
    from sfu.viewer import _IdleTrack

    video = pc.addTransceiver(_IdleTrack("video"), direction="sendonly").sender
    audio = pc.addTransceiver(_IdleTrack("audio"), direction="sendonly").sender
    remote = RTCPeerConnection(client_configuration())
    try:
        remote.addTransceiver("video", direction="recvonly")
        remote.addTransceiver("audio", direction="recvonly")
        await _connect(pc, remote)
        assert video.transport is audio.transport  # bundled, as browsers and aiortc do
        link = _Link(
            pc,
            remote,
            video,
            audio,
            aiortc_adapter.DirectRtpSender(video),
            aiortc_adapter.DirectRtpSender(audio),
        )

        def keep(data: bytes) -> bool:
            link.arrived.append(data)
            return link.deliver

        aiortc_adapter.filter_incoming_rtp(link.receiving, keep)
        # bound now (send would bind them), so that a test may stand in for their socket
        for direct in (link.video, link.audio):
            bound = direct._bind()
            assert bound
            assert direct._socket is not None  # asyncio's transport: its socket is used
        yield link
    finally:
        await remote.close()


@dataclass(frozen=True)
class _Rtp:
    sequence_number: int
    timestamp: int
    payload: bytes


def _stream(first: int, payload_sizes: Sequence[int]) -> list[_Rtp]:
    """Packets numbered from ``first``, each with its own timestamp and payload content."""
    return [
        _Rtp(first + i, 3000 * (first + i), bytes([(first + i) % 251]) * size)
        for i, size in enumerate(payload_sizes)
    ]


def _send(
    direct: aiortc_adapter.DirectRtpSender, ssrc: int, payload_type: int, packets: list[_Rtp]
) -> None:
    for packet in packets:
        template = RtpPacket(payload_type=payload_type, payload=packet.payload).serialize()
        queued = direct.send(
            template,
            packet.sequence_number,
            packet.timestamp,
            ssrc,
            packet.sequence_number << 32,
            len(packet.payload),
        )
        assert queued == len(template)


async def _arrivals(link: _Link, ssrc: int, count: int) -> list[_Rtp]:
    """The packets of ``ssrc`` the receiving peer decrypted, once ``count`` are there (or
    after 3 s)."""
    for _ in range(300):
        packets = [p for p in map(RtpPacket.parse, link.arrived) if p.ssrc == ssrc]
        if len(packets) >= count:
            break
        await asyncio.sleep(0.01)
    return [_Rtp(p.sequence_number, p.timestamp, p.payload) for p in packets]


def _is_rtp(data: bytes) -> bool:
    return 128 <= data[0] < 192 and not 192 <= data[1] <= 223  # not RTCP


@dataclass(frozen=True)
class _Sent:
    call: str  # "sendto" or "sendmsg"
    sizes: tuple[int, ...]  # the datagrams the kernel makes of it


class _SocketSpy:
    """Stands in for a ``DirectRtpSender``'s socket: passes each send to the real socket
    and records it, or refuses it as the kernel would.

    ``gso_sends``: the GSO sends (``sendmsg``) taken before every further one fails with
    EIO (a device without checksum offload). ``room``: the datagrams taken before every
    further send fails with EAGAIN (a full send buffer; a GSO send is taken or refused
    whole).
    """

    def __init__(self, sock: Any, *, gso_sends: int | None = None, room: int | None = None) -> None:
        self._sock = sock
        self._gso_sends = gso_sends
        self._room = room
        self.sent: list[_Sent] = []
        self.refused: list[tuple[str, int]] = []

    @property
    def datagrams(self) -> list[int]:
        return [size for sent in self.sent for size in sent.sizes]

    def sendto(self, data: Any, addr: tuple[str, int]) -> int:
        self._take(_Sent("sendto", (len(data),)))
        result: int = self._sock.sendto(data, addr)
        return result

    def sendmsg(self, buffers: Any, ancdata: Any, flags: int, addr: tuple[str, int]) -> int:
        (data,) = buffers
        ((level, kind, value),) = ancdata
        assert (level, kind, flags) == (socket.SOL_UDP, UDP_SEGMENT, 0)
        (segment,) = struct.unpack("=H", value)
        full, rest = divmod(len(data), segment)
        if self._gso_sends is not None:
            if not self._gso_sends:
                self.refused.append(("sendmsg", errno.EIO))
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            self._gso_sends -= 1
        self._take(_Sent("sendmsg", (segment,) * full + ((rest,) if rest else ())))
        result: int = self._sock.sendmsg(buffers, ancdata, flags, addr)
        assert result == len(data)
        return result

    def _take(self, sent: _Sent) -> None:
        if self._room is not None:
            if len(sent.sizes) > self._room:
                self.refused.append((sent.call, errno.EAGAIN))
                self._room = 0  # the buffer stays full
                raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
            self._room -= len(sent.sizes)
        self.sent.append(sent)


def _spy(direct: aiortc_adapter.DirectRtpSender, **refusals: int) -> _SocketSpy:
    spy = _SocketSpy(direct._socket, **refusals)
    direct._socket = spy  # type: ignore[assignment]
    return spy


def _count_rtp_sendto(transport: Any) -> list[int]:
    """The sizes of the RTP datagrams given to ``transport.sendto`` from now on."""
    sizes: list[int] = []
    sendto = transport.sendto

    def counting_sendto(data: bytes, addr: Any = None) -> None:
        if _is_rtp(data):
            sizes.append(len(data))
        sendto(data, addr)

    transport.sendto = counting_sendto
    return sizes


# a frame of 6 packets (the last shorter), one of 4 (the last shorter), a lone small one
VIDEO_BURST = [1100] * 5 + [437] + [1100] * 3 + [611] + [180]
VIDEO_RUNS = [slice(0, 6), slice(6, 10), slice(10, 11)]


async def test_a_burst_leaves_in_one_gso_send_per_run_and_arrives_in_order(
    link: _Link,
) -> None:
    video_spy, audio_spy = _spy(link.video), _spy(link.audio)
    video = _stream(100, VIDEO_BURST)
    audio = _stream(500, [160])
    _send(link.video, link.video_sender._ssrc, link.payload_type(link.video_sender), video)
    _send(link.audio, link.audio_sender._ssrc, link.payload_type(link.audio_sender), audio)
    queued = list(link.video._sizes)  # protected sizes: the template's and the SRTP tag
    tag = queued[0] - 12 - VIDEO_BURST[0]
    assert 0 < tag <= SRTP_MAX_TRAILER_LEN
    assert queued == [12 + size + tag for size in VIDEO_BURST]

    assert await _arrivals(link, link.video_sender._ssrc, len(video)) == video
    assert await _arrivals(link, link.audio_sender._ssrc, 1) == audio
    # one sendmsg per run of same-size datagrams, its last one shorter; a lone one: sendto
    assert video_spy.sent == [
        _Sent("sendmsg", tuple(queued[VIDEO_RUNS[0]])),
        _Sent("sendmsg", tuple(queued[VIDEO_RUNS[1]])),
        _Sent("sendto", tuple(queued[VIDEO_RUNS[2]])),
    ]
    assert audio_spy.sent == [_Sent("sendto", (12 + 160 + tag,))]
    assert video_spy.refused == audio_spy.refused == []
    assert link.video._gso
    # what aiortc's statistics and sender reports count
    assert aiortc_adapter.sender_report_state(link.video_sender)[2:] == (
        sum(VIDEO_BURST),
        len(VIDEO_BURST),
    )
    stats = await link.pc.getStats()
    transport_stats = next(s for s in stats.values() if s.type == "transport")
    assert transport_stats.packetsSent >= len(video) + len(audio)


async def test_packets_leave_when_the_loop_turn_ends_or_on_flush_sends(link: _Link) -> None:
    spy = _spy(link.video)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    first, second = _stream(1, [1000] * 4), _stream(5, [1000] * 4)

    _send(link.video, ssrc, payload_type, first)
    assert spy.sent == []  # nothing yet: the packets wait in the buffer
    assert len(link.video._sizes) == len(first)
    aiortc_adapter.flush_sends()  # now
    assert [sent.call for sent in spy.sent] == ["sendmsg"]
    assert len(spy.datagrams) == len(first)
    assert link.video._sizes == []

    _send(link.video, ssrc, payload_type, second)
    assert len(spy.sent) == 1
    # the flush was queued (call_soon) before this task's next step: it runs first
    await asyncio.sleep(0)
    assert [sent.call for sent in spy.sent] == ["sendmsg", "sendmsg"]
    assert len(spy.datagrams) == len(first) + len(second)
    assert await _arrivals(link, ssrc, len(first) + len(second)) == first + second
    assert len(spy.sent) == 2  # nothing sent twice


@pytest.mark.parametrize("gso_sends", [0, 1])
async def test_where_gso_is_refused_the_packets_go_one_at_a_time(
    link: _Link, gso_sends: int
) -> None:
    spy = _spy(link.video, gso_sends=gso_sends)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    burst = _stream(100, VIDEO_BURST)
    _send(link.video, ssrc, payload_type, burst)
    queued = list(link.video._sizes)

    assert await _arrivals(link, ssrc, len(burst)) == burst
    assert spy.refused == [("sendmsg", errno.EIO)]
    assert not link.video._gso
    taken = queued[VIDEO_RUNS[0]] if gso_sends else []  # the run GSO took before it failed
    expected = [_Sent("sendmsg", tuple(taken))] if taken else []
    expected += [_Sent("sendto", (size,)) for size in queued[len(taken) :]]
    assert spy.sent == expected

    # GSO stays off for this sender: the next burst goes one at a time from the start
    spy.sent.clear()
    again = _stream(200, VIDEO_BURST)
    _send(link.video, ssrc, payload_type, again)
    assert await _arrivals(link, ssrc, 2 * len(burst)) == burst + again
    assert spy.refused == [("sendmsg", errno.EIO)]
    assert [sent.call for sent in spy.sent] == ["sendto"] * len(again)


@pytest.mark.parametrize(
    ("room", "taken"),
    [
        (0, 0),  # the first send is refused
        (3, 0),  # a GSO send of 6 datagrams does not fit in the room of 3
        (6, 6),  # the first run is sent, the second refused
        (10, 10),  # the lone last packet is refused
    ],
)
async def test_what_the_socket_refuses_with_eagain_goes_through_the_transport_in_order(
    link: _Link, room: int, taken: int
) -> None:
    spy = _spy(link.video, room=room)
    through_transport = _count_rtp_sendto(link.video._transport)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    burst = _stream(100, VIDEO_BURST)
    _send(link.video, ssrc, payload_type, burst)
    queued = list(link.video._sizes)

    assert await _arrivals(link, ssrc, len(burst)) == burst
    assert len(spy.refused) == 1
    assert spy.datagrams == queued[:taken]
    assert through_transport == queued[taken:]
    assert link.video._gso  # EAGAIN is no reason to give GSO up


class _FullOnce:
    """Stands in for a datagram transport's socket: refuses the first send with EAGAIN."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.refused = 0

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        if not self.refused:
            self.refused += 1
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return self._sock.sendto(data, addr)


async def test_while_the_transport_holds_a_queue_later_packets_queue_behind_it(
    link: _Link,
) -> None:
    spy = _spy(link.video, room=0)
    transport = link.video._transport
    through_transport = _count_rtp_sendto(transport)
    real = transport._sock
    transport._sock = full = _FullOnce(real)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    first, second = _stream(100, VIDEO_BURST), _stream(200, VIDEO_BURST)
    try:
        _send(link.video, ssrc, payload_type, first)
        aiortc_adapter.flush_sends()
        # the socket refused the first send, so did the transport's: it queued them all
        assert spy.refused == [("sendmsg", errno.EAGAIN)]
        assert full.refused == 1
        assert len(transport._buffer) >= len(first)
        _send(link.video, ssrc, payload_type, second)
        aiortc_adapter.flush_sends()
        # behind the transport's queue, not on the socket (which would overtake it)
        assert spy.refused == [("sendmsg", errno.EAGAIN)]
        assert len(through_transport) == len(first) + len(second)
        assert await _arrivals(link, ssrc, len(first) + len(second)) == first + second
        assert spy.sent == []
    finally:
        transport._sock = real


async def test_more_than_a_buffer_in_one_turn_is_sent_as_the_buffer_fills(
    link: _Link,
) -> None:
    spy = _spy(link.video)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    burst = _stream(1000, [1200 - 12] * 40)  # 48 KB of 1.2 KB packets
    _send(link.video, ssrc, payload_type, burst)
    assert [sent.call for sent in spy.sent] == ["sendmsg"]  # sent when the buffer filled
    early = len(spy.datagrams)
    assert 0 < early < len(burst)
    assert len(link.video._sizes) == len(burst) - early

    assert await _arrivals(link, ssrc, len(burst)) == burst
    assert [sent.call for sent in spy.sent] == ["sendmsg", "sendmsg"]
    protected = spy.datagrams[0]
    assert spy.datagrams == [protected] * len(burst)
    assert sum(spy.sent[0].sizes) <= aiortc_adapter._BATCH_BYTES + SRTP_MAX_TRAILER_LEN


def _send_on_a_loop_that_closes(send: Callable[[], None]) -> None:
    """Call ``send`` in an event loop that stops and closes before its next turn (as
    pytest-asyncio's loop does when a test ends right after sending): what it queued for
    that turn is never sent. The calling thread waits: nothing runs meanwhile."""

    failed: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()

        async def sending() -> None:
            try:
                send()
            finally:
                loop.stop()  # the current turn is the last

        try:
            loop.run_until_complete(sending())
        except BaseException as exc:
            failed.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


async def test_a_batch_left_on_a_closed_loop_does_not_hold_up_the_next(link: _Link) -> None:
    video_ssrc, video_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    audio_ssrc, audio_type = link.audio_sender._ssrc, link.payload_type(link.audio_sender)
    stale = _stream(100, [1000] * 3)
    _send_on_a_loop_that_closes(lambda: _send(link.video, video_ssrc, video_type, stale))
    assert len(link.video._sizes) == len(stale)  # queued, and its flush will never run

    audio = _stream(500, [160] * 2)
    _send(link.audio, audio_ssrc, audio_type, audio)
    assert await _arrivals(link, audio_ssrc, len(audio)) == audio
    assert link.video._sizes == []  # what was queued for the closed loop is dropped
    video = _stream(103, [1000] * 3)
    _send(link.video, video_ssrc, video_type, video)  # and the sender sends on this loop
    assert await _arrivals(link, video_ssrc, len(video)) == video


class _Readiness:
    """Records, for each readiness of an ICE socket (each call asyncio makes to its
    protocol), the datagrams its protocol got."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = [[]]  # the first: before ``above`` counts

    def below(self, protocol: Any) -> None:
        """Count what reaches the protocol (call before ``drain_datagrams``)."""
        received = protocol.datagram_received

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            self.batches[-1].append(data)
            received(data, addr)

        protocol.datagram_received = datagram_received

    def above(self, protocol: Any) -> None:
        """Count the readinesses (call after ``drain_datagrams``)."""
        received = protocol.datagram_received

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            self.batches.append([])
            received(data, addr)

        protocol.datagram_received = datagram_received

    def of(self, datagrams: list[bytes]) -> list[list[bytes]]:
        """The batches that had some of ``datagrams``, with only those."""
        wanted = set(datagrams)
        batches = [[d for d in batch if d in wanted] for batch in self.batches]
        return [batch for batch in batches if batch]


def _nominated_protocol(transport: RTCDtlsTransport) -> Any:
    return transport.transport._connection._nominated[1].protocol


async def _send_junk(protocol: Any, count: int) -> list[bytes]:
    """Queue ``count`` datagrams in ``protocol``'s socket (neither STUN, DTLS nor RTP:
    aioice and aiortc drop them) and let it be read once all are there."""
    datagrams = [b"\x00junk" + i.to_bytes(2, "big") + bytes(93) for i in range(count)]
    transport = protocol.transport
    address = transport.get_extra_info("sockname")
    transport.pause_reading()
    with socket.socket(transport.get_extra_info("socket").family, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, address)
    await asyncio.sleep(0.05)  # loopback delivers at once; this leaves the kernel leeway
    transport.resume_reading()
    return datagrams


async def _read_junk_in_batches(protocol: Any, readiness: _Readiness, count: int) -> list[int]:
    """How many of ``count`` junk datagrams queued together ``protocol`` got per readiness."""
    junk = await _send_junk(protocol, count)
    for _ in range(300):
        if sum(map(len, readiness.of(junk))) == len(junk):
            break
        await asyncio.sleep(0.01)
    batches = readiness.of(junk)
    assert [d for batch in batches for d in batch] == junk  # all, in order
    return [len(batch) for batch in batches]


async def test_drain_datagrams_reads_up_to_32_datagrams_per_readiness(link: _Link) -> None:
    protocol = _nominated_protocol(link.receiving)
    readiness = _Readiness()
    readiness.below(protocol)
    aiortc_adapter.drain_datagrams(link.receiving)
    readiness.above(protocol)

    assert await _read_junk_in_batches(protocol, readiness, 40) == [32, 8]


async def test_a_burst_sent_with_gso_is_read_in_one_readiness(link: _Link) -> None:
    protocol = _nominated_protocol(link.receiving)
    readiness = _Readiness()
    readiness.below(protocol)
    aiortc_adapter.drain_datagrams(link.receiving)
    readiness.above(protocol)
    spy = _spy(link.video)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)

    burst = _stream(100, [1000] * 10)
    protocol.transport.pause_reading()
    _send(link.video, ssrc, payload_type, burst)
    aiortc_adapter.flush_sends()
    assert [sent.call for sent in spy.sent] == ["sendmsg"]
    await asyncio.sleep(0.05)  # loopback delivers at once; this leaves the kernel leeway
    protocol.transport.resume_reading()
    assert await _arrivals(link, ssrc, len(burst)) == burst
    protected = spy.datagrams[0]
    batches = [
        [d for d in batch if _is_rtp(d) and len(d) == protected] for batch in readiness.batches
    ]
    assert [len(batch) for batch in batches if batch] == [len(burst)]


async def test_receivers_tapped_after_bundling_still_read_32_datagrams_per_readiness(
    link: _Link,
) -> None:
    receivers = [t.receiver for t in link.remote.getTransceivers()]
    assert all(receiver.transport is link.receiving for receiver in receivers)
    protocol = _nominated_protocol(link.receiving)
    readiness = _Readiness()
    readiness.below(protocol)
    tapped: list[int] = []

    async def on_packet(packet: RtpPacket) -> None:
        tapped.append(packet.ssrc)

    for receiver in receivers:
        aiortc_adapter.tap_receiver(receiver, on_packet, decode=False)
    link.deliver = True
    # a first packet for each receiver: each tap then drains the transport's sockets
    for sender, direct in ((link.video_sender, link.video), (link.audio_sender, link.audio)):
        _send(direct, sender._ssrc, link.payload_type(sender), _stream(1, [100]))
    for _ in range(300):
        if len(set(tapped)) == 2:
            break
        await asyncio.sleep(0.01)
    assert set(tapped) == {link.video_sender._ssrc, link.audio_sender._ssrc}
    readiness.above(protocol)

    batches = await _read_junk_in_batches(protocol, readiness, 100)
    assert max(batches) <= aiortc_adapter.INGEST_READ_BATCH


async def test_a_publishers_sockets_are_drained_and_sized_when_only_its_second_media_flows(
    pc: RTCPeerConnection,
) -> None:
    """As ``Producer`` does: each receiver is tapped before the publisher's offer is
    answered. The publisher's first m-line (audio) sends nothing (no microphone yet)."""
    from sfu.viewer import _IdleTrack

    pc.addTransceiver(_IdleTrack("audio"), direction="sendonly")
    video = pc.addTransceiver(_IdleTrack("video"), direction="sendonly")
    remote = RTCPeerConnection(client_configuration())
    try:
        tapped: list[int] = []

        async def on_packet(packet: RtpPacket) -> None:
            tapped.append(packet.ssrc)

        for kind in ("audio", "video"):
            receiver = remote.addTransceiver(kind, direction="recvonly").receiver
            aiortc_adapter.tap_receiver(receiver, on_packet, decode=False)
        await _connect(pc, remote)
        transport = remote.getTransceivers()[1].receiver.transport
        assert transport is remote.getTransceivers()[0].receiver.transport  # bundled
        protocol = _nominated_protocol(transport)
        readiness = _Readiness()
        readiness.below(protocol)
        direct = aiortc_adapter.DirectRtpSender(video.sender)
        packets = _stream(1, [1000] * 3)
        _send(direct, video.sender._ssrc, _payload_type(video), packets)
        for _ in range(300):
            if len(tapped) == len(packets):
                break
            await asyncio.sleep(0.01)
        assert tapped == [video.sender._ssrc] * len(packets)
        readiness.above(protocol)

        assert await _read_junk_in_batches(protocol, readiness, 40) == [32, 8]
        sock = protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(
            aiortc_adapter.INGEST_RECEIVE_BUFFER, RMEM_MAX
        )
    finally:
        await remote.close()
