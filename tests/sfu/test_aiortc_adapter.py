"""The aiortc internals sfu/aiortc_adapter.py relies on. If aiortc changes, these fail
first, and name what moved."""

import asyncio
import importlib.metadata
import inspect
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
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
