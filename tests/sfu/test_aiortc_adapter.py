"""The aiortc internals sfu/aiortc_adapter.py relies on. If aiortc changes, these fail
first, and name what moved."""

import asyncio
import datetime
import errno
import importlib.metadata
import inspect
import os
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioice import Connection
from aioice.ice import StunProtocol
from aiortc import (
    AudioStreamTrack,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    VideoStreamTrack,
    clock,
)
from aiortc.codecs import CODECS
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import RTCCertificate, RtpRouter
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from pylibsrtp import SRTP_MAX_TRAILER_LEN

from sfu import aiortc_adapter, ice_mux, native, rtp_sender
from sfu import producer as producer_module
from sfu.downtrack import DownTrack
from sfu.munger import RtpMunger
from sfu.producer import Producer
from sfu.router import Router
from testpeers import TestClients, aiortc_hooks, client_configuration, wait_until
from tests.daphne import free_port
from tests.sfu.forwarding_loop import NATIVE_FORWARDING, needs_c_loop, options

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
    assert list(inspect.signature(receiver._handle_rtcp_packet).parameters) == ["packet"]
    assert list(inspect.signature(receiver._send_rtcp).parameters) == ["packet"]
    assert isinstance(receiver._RTCRtpReceiver__rtcp_ssrc, int)
    assert aiortc_adapter.sender_rtt(sender) is None  # none measured yet
    assert list(inspect.signature(sender._handle_rtcp_packet).parameters) == ["packet"]
    assert isinstance(sender._ssrc, int)
    assert isinstance(sender._rtx_ssrc, int)
    assert aiortc_hooks.sender_report_state(sender) == (0, 0, 0, 0)
    transport = sender.transport
    assert list(inspect.signature(transport._send_rtp).parameters) == ["data"]
    assert list(inspect.signature(transport._handle_rtp_data).parameters) == [
        "data",
        "arrival_time_ms",
    ]
    assert aiortc_hooks.decoder_thread(receiver) is None
    assert isinstance(receiver._RTCRtpReceiver__remote_bitrate_estimator, RemoteBitrateEstimator)
    aiortc_adapter.drop_bitrate_estimator(receiver)
    assert receiver._RTCRtpReceiver__remote_bitrate_estimator is None
    # what sfu.rtp_sender reads through the adapter, before DTLS is up
    assert not aiortc_adapter.dtls_connected(transport)
    assert aiortc_adapter.nominated_pairs(transport) == {}
    assert aiortc_adapter.transmit_srtp(transport) is None
    # what sfu.ice_config reads and writes through the adapter
    ice = transport.transport
    connection = aiortc_adapter.gatherer_connection(ice.iceGatherer)
    assert aiortc_adapter.ice_nominated_pairs(connection) == {}
    assert connection._protocols == []
    assert connection._query_consent_task is None
    aiortc_adapter.renew_ice_credentials(ice, local=("ufrag", "pwd"), remote=("u", "p"))
    assert (connection.local_username, connection.local_password) == ("ufrag", "pwd")
    assert (connection.remote_username, connection.remote_password) == ("u", "p")


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


async def test_a_receiver_stand_in_is_tapped_and_asked_for_keyframes_as_a_receiver_is() -> None:
    """What ``sfu.pipe``'s edge hands its producers: the same private members as a real
    receiver (checked above), played by ``ReceiverStandIn``."""
    plis: list[int] = []
    stand_in = aiortc_adapter.ReceiverStandIn(plis.append)
    seen: list[int] = []

    async def on_packet(packet: RtpPacket) -> None:
        seen.append(packet.sequence_number)

    aiortc_adapter.tap_receiver(stand_in, on_packet, decode=False)  # type: ignore[arg-type]
    for sequence_number in (7, 8):
        await stand_in.receive(RtpPacket(sequence_number=sequence_number, payload=b"x"))
    assert seen == [7, 8]
    await aiortc_adapter.send_pli(stand_in, 4321)  # type: ignore[arg-type]
    assert plis == [4321]


async def test_send_nack_uses_the_receivers_rtcp_path(pc: RTCPeerConnection) -> None:
    receiver = pc.addTransceiver("video").receiver
    sent: list[bytes] = []

    async def send_rtp(data: bytes) -> None:
        sent.append(data)

    receiver.transport._send_rtp = send_rtp  # type: ignore[method-assign]
    receiver._set_rtcp_ssrc(1234)
    await aiortc_hooks.send_nack(receiver, 4321, [7, 9, 40])
    await aiortc_hooks.send_nack(receiver, 4321, [65534, 65535, 0, 1, 20])  # the wrap
    packets = [RtcpPacket.parse(data)[0] for data in sent]
    assert all(isinstance(p, RtcpRtpfbPacket) and p.fmt == RTCP_RTPFB_NACK for p in packets)
    assert [(p.ssrc, p.media_ssrc) for p in packets] == [(1234, 4321)] * 2
    assert [[n & 0xFFFF for n in p.lost] for p in packets] == [
        [7, 9, 40],
        [65534, 65535, 0, 1, 20],
    ]


async def test_send_remb_uses_the_receivers_rtcp_path_and_ssrc(pc: RTCPeerConnection) -> None:
    receiver = pc.addTransceiver("video").receiver
    sent: list[bytes] = []

    async def send_rtp(data: bytes) -> None:
        sent.append(data)

    receiver.transport._send_rtp = send_rtp  # type: ignore[method-assign]
    receiver._set_rtcp_ssrc(1234)
    await aiortc_adapter.send_remb(receiver, 2_000_000, [4321, 8765])
    (packet,) = RtcpPacket.parse(sent[0])
    assert isinstance(packet, RtcpPsfbPacket)
    assert packet.fmt == RTCP_PSFB_APP
    assert (packet.ssrc, packet.media_ssrc) == (1234, 0)
    assert unpack_remb_fci(packet.fci) == (2_000_000, [4321, 8765])


async def test_received_stream_counters_count_by_sequence_number_per_ssrc(
    pc: RTCPeerConnection,
) -> None:
    receiver: RTCRtpReceiver = pc.addTransceiver("video").receiver
    receiver._RTCRtpReceiver__codecs[VP8.payloadType] = VP8
    assert aiortc_adapter.received_stream_counters(receiver) == {}
    for ssrc, sequence_number in ((1234, 1), (1234, 2), (1234, 5), (1234, 3), (99, 7)):
        packet = RtpPacket(
            payload_type=VP8.payloadType,
            sequence_number=sequence_number,
            ssrc=ssrc,
            payload=b"\x10\x00\x9d\x01\x2a",
        )
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    # 1..5 expected, 4 came (3 late); the receiver's reports count them the same way
    assert aiortc_adapter.received_stream_counters(receiver) == {1234: (5, 4), 99: (1, 1)}


RTX = RTCRtpCodecParameters(
    mimeType="video/rtx",
    clockRate=90000,
    payloadType=VP8.payloadType + 1,
    parameters={"apt": VP8.payloadType},
)


async def test_a_simulcast_receiver_gives_each_layer_its_packets(pc: RTCPeerConnection) -> None:
    """aiortc's receiver, its RTX map, NACK generator and jitter buffer slot, its
    transport's header extension map and RTP router, as ``SimulcastReceiver`` uses them:
    a packet's SSRC is learned from its rid, RTX from its repaired rid (waiting for its
    media SSRC), unwrapped by aiortc, NACKed per layer, and strangers leave no trace."""
    receiver: RTCRtpReceiver = pc.addTransceiver("video").receiver
    transport: RTCDtlsTransport = receiver.transport
    codecs = receiver._RTCRtpReceiver__codecs
    codecs[VP8.payloadType], codecs[RTX.payloadType] = VP8, RTX
    assert isinstance(receiver._RTCRtpReceiver__rtx_ssrc, dict)
    assert isinstance(receiver._RTCRtpReceiver__nack_generator, NackGenerator)
    router = transport._rtp_router
    router.register_receiver(receiver, ssrcs=[], payload_types=[VP8.payloadType, RTX.payloadType])
    sent: list[bytes] = []

    async def send_rtp(data: bytes) -> None:
        sent.append(data)

    transport._send_rtp = send_rtp  # type: ignore[method-assign]
    layers = aiortc_adapter.SimulcastReceiver(
        receiver, ("q", "h"), rid_extension=10, repaired_rid_extension=11
    )
    layers.configure_transport()
    extensions = transport._rtp_header_extensions_map
    seen: dict[str, list[tuple[int, int]]] = {"q": [], "h": []}
    for rid, stand_in in layers.layers.items():

        async def on_packet(packet: RtpPacket, rid: str = rid) -> None:
            seen[rid].append((packet.ssrc, packet.sequence_number))

        aiortc_adapter.tap_receiver(stand_in, on_packet, decode=False)  # type: ignore[arg-type]

    async def arrive(
        ssrc: int, number: int, *, rid: str = "", repaired: str = "", repairs: int = 0
    ) -> None:
        payload = b"\x10\x00\x00"
        packet = RtpPacket(payload_type=VP8.payloadType, sequence_number=number, ssrc=ssrc)
        if repairs:  # a retransmission of packet ``repairs``
            packet.payload_type = RTX.payloadType
            payload = struct.pack("!H", repairs) + payload
        packet.payload = payload
        packet.extensions.rtp_stream_id = rid or None
        packet.extensions.repaired_rtp_stream_id = repaired or None
        await transport._handle_rtp_data(packet.serialize(extensions), arrival_time_ms=0)

    def sent_nacks() -> list[tuple[int, list[int]]]:
        nacks = [RtcpPacket.parse(data)[0] for data in sent if data[1] == 205]
        return [(n.media_ssrc, n.lost) for n in nacks if isinstance(n, RtcpRtpfbPacket)]

    await arrive(0xAAA, 1, repaired="q", repairs=3)  # q's RTX before its media: waits
    assert layers.dropped == 1
    await arrive(0x111, 1, rid="q")
    await arrive(0x222, 50_000, rid="h")
    await arrive(0x111, 2)  # the rid is on the first packets only
    await arrive(0x222, 50_001)
    # the layers' numbers, far apart, are no losses of each other; a gap in q is q's
    assert sent_nacks() == []
    await arrive(0x111, 4)
    assert sent_nacks() == [(0x111, [3])]
    await arrive(0xAAA, 2, repairs=3)  # unwrapped by aiortc into q's packet 3
    assert seen == {
        "q": [(0x111, 1), (0x111, 2), (0x111, 4), (0x111, 3)],
        "h": [(0x222, 50_000), (0x222, 50_001)],
    }
    assert layers.rid_of(0x111) == "q"
    assert layers.dropped == 1
    await arrive(0x222, 50_004)
    assert sent_nacks()[1:] == [(0x222, [50_002, 50_003])]
    # a layer's keyframe request names its media SSRC
    await aiortc_adapter.send_pli(layers.layers["h"], 0x222)  # type: ignore[arg-type]
    (pli,) = [RtcpPacket.parse(data)[0] for data in sent if data[1] == 206]
    assert isinstance(pli, RtcpPsfbPacket)
    assert pli.media_ssrc == 0x222
    # strangers: dropped, not routed, not counted in aiortc's statistics
    routes = dict(router.ssrc_table)
    for stranger in range(0x5000, 0x5000 + 50):
        await arrive(stranger, 7)
    assert layers.dropped == 51
    assert router.ssrc_table == routes
    assert set(receiver._RTCRtpReceiver__remote_streams) == {0x111, 0x222, 0xAAA}
    # a new SSRC for h (its encoder restarted) replaces the old one, in aiortc too; a
    # publisher doing so on every packet grows nothing
    for ssrc in range(0x6000, 0x6000 + 50):
        await arrive(ssrc, 9, rid="h")
    assert layers.rid_of(0x6000 + 49) == "h"
    assert layers.rid_of(0x222) is None
    assert set(router.ssrc_table) == {0x111, 0x6000 + 49, 0xAAA}
    assert set(receiver._RTCRtpReceiver__remote_streams) == {0x111, 0x6000 + 49, 0xAAA}
    assert set(receiver._RTCRtpReceiver__active_ssrc) == {0x111, 0x6000 + 49, 0xAAA}


def test_nacks_are_read_from_their_last_fci_back_up_to_the_limit() -> None:
    limit = 64
    aiortc_adapter.limit_nack_parsing(limit)
    aiortc_adapter.limit_nack_parsing(limit // 2)  # a router asking for fewer: as before
    for lost in ([7], [7, 9, 40], [1, 17, 18, 300], list(range(100, 110))):
        packet = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=2, lost=lost)
        (parsed,) = RtcpPacket.parse(bytes(packet))
        assert isinstance(parsed, RtcpRtpfbPacket)
        assert (parsed.lost, parsed.ssrc, parsed.media_ssrc) == (lost, 1, 2)
    # as aiortc reads it, pid + n unwrapped: 65535 with a mask of 0b11 names 65536 and 65537
    wrapping = struct.pack("!BBHLLHH", 0x81, 205, 3, 1, 2, 65535, 0b11)
    (parsed,) = RtcpPacket.parse(wrapping)
    assert isinstance(parsed, RtcpRtpfbPacket)
    assert parsed.lost == [65535, 65536, 65537]
    flood = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=2, lost=list(range(1000)))
    (parsed,) = RtcpPacket.parse(bytes(flood))
    assert isinstance(parsed, RtcpRtpfbPacket)
    assert limit <= len(parsed.lost) < limit + 17  # whole FCIs, from the last one back
    assert parsed.lost == list(range(1000 - len(parsed.lost), 1000))
    sparse = RtcpRtpfbPacket(
        fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=2, lost=list(range(0, 20000, 20))
    )
    (parsed,) = RtcpPacket.parse(bytes(sparse))
    assert isinstance(parsed, RtcpRtpfbPacket)
    assert parsed.lost == list(range(20000 - 20 * limit, 20000, 20))
    for broken in (b"\x81\xcd\x00\x01" + bytes(4), b"\x81\xcd\x00\x02" + bytes(6)):
        with pytest.raises(ValueError, match="RTCP"):
            RtcpPacket.parse(broken)


async def test_sender_rtt_is_what_a_receiver_report_answering_a_sender_report_gives(
    pc: RTCPeerConnection,
) -> None:
    sender: RTCRtpSender = pc.addTransceiver("video").sender
    # as if aiortc had sent a sender report 0.3 s ago that the peer held for 0.1 s
    sender._RTCRtpSender__lsr = 0x12345678  # type: ignore[attr-defined]
    sender._RTCRtpSender__lsr_time = time.time() - 0.3  # type: ignore[attr-defined]
    report = RtcpReceiverInfo(
        ssrc=sender._ssrc,
        fraction_lost=0,
        packets_lost=0,
        highest_sequence=0,
        jitter=0,
        lsr=0x12345678,
        dlsr=65536 // 10,
    )
    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1, reports=[report]))
    rtt = aiortc_adapter.sender_rtt(sender)
    assert rtt is not None
    assert 0.19 < rtt < 0.5


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


def test_a_remb_reaches_each_sender_it_lists_and_its_bitrate_is_read() -> None:
    router = RtpRouter()
    video, audio, other = object(), object(), object()
    router.register_sender(video, 1111)  # type: ignore[arg-type]
    router.register_sender(audio, 2222)  # type: ignore[arg-type]
    router.register_sender(other, 3333)  # type: ignore[arg-type]
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(480_000, [1111, 2222])
    )
    assert router.route_rtcp(remb) == {video, audio}
    assert aiortc_adapter.remb_bitrate(remb) == 480_000
    assert (
        aiortc_adapter.remb_bitrate(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0)) is None
    )
    assert (
        aiortc_adapter.remb_bitrate(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=5)) is None
    )


async def test_on_receiver_rtcp_sees_each_packet_and_aiortc_still_handles_it(
    pc: RTCPeerConnection,
) -> None:
    receiver: RTCRtpReceiver = pc.addTransceiver("video").receiver
    seen: list[None] = []
    aiortc_adapter.on_receiver_rtcp(receiver, lambda: seen.append(None))
    await receiver._handle_rtcp_packet(
        RtcpSrPacket(
            ssrc=7,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=1 << 32, rtp_timestamp=0, packet_count=3, octet_count=300
            ),
        )
    )
    await receiver._handle_rtcp_packet(RtcpByePacket(sources=[7]))
    assert len(seen) == 2
    stats = await receiver.getStats()
    assert any(s.type == "remote-outbound-rtp" and s.packetsSent == 3 for s in stats.values())


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
    with aiortc_hooks.spy_codec_factories(
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
    aiortc_hooks.filter_incoming_rtp(transport, lambda data: data != b"drop")
    await transport._handle_rtp_data(b"keep", 0)
    await transport._handle_rtp_data(b"drop", 0)
    assert delivered == [b"keep"]


async def test_hold_outgoing_media_sends_nothing_while_held(pc: RTCPeerConnection) -> None:
    transport = pc.addTransceiver("video").sender.transport
    sent: list[bytes] = []

    async def send_rtp(data: bytes) -> None:
        sent.append(data)

    transport._send_rtp = send_rtp  # type: ignore[method-assign]
    held = True
    aiortc_hooks.hold_outgoing_media(transport, lambda: held)
    await transport._send_rtp(b"during")
    held = False
    await transport._send_rtp(b"after")
    assert sent == [b"after"]


async def test_send_rtp_goes_through_the_transports_srtp_send(pc: RTCPeerConnection) -> None:
    transport = pc.addTransceiver("video").sender.transport
    sent: list[bytes] = []

    async def send_rtp(data: bytes) -> None:
        sent.append(data)

    transport._send_rtp = send_rtp  # type: ignore[method-assign]
    await aiortc_hooks.send_rtp(transport, b"packet")
    assert sent == [b"packet"]
    with pytest.raises(ConnectionError):  # aiortc's own, not connected yet
        await aiortc_hooks.send_rtp(pc.addTransceiver("audio").sender.transport, b"packet")


async def test_route_rtcp_about_gets_feedback_for_its_ssrcs_once_per_packet(
    pc: RTCPeerConnection,
) -> None:
    transport = pc.addTransceiver("video").sender.transport
    got: list[AnyRtcpPacket] = []

    async def handler(packet: AnyRtcpPacket) -> None:
        got.append(packet)

    aiortc_hooks.route_rtcp_about(transport, [11, 12], handler)
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=12)
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(300_000, [11, 12])
    )
    other = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=13)
    report = RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(11, 0, 0, 0, 0, 0, 0)])
    await transport._handle_rtcp_data(b"".join(bytes(p) for p in (pli, remb, other, report)))
    assert [type(p) for p in got] == [RtcpPsfbPacket, RtcpPsfbPacket, RtcpRrPacket]
    assert [getattr(p, "fmt", None) for p in got[:2]] == [RTCP_PSFB_PLI, RTCP_PSFB_APP]


async def test_shape_incoming_rtp_delivers_at_the_links_rate_and_drops_past_its_queue(
    pc: RTCPeerConnection,
) -> None:
    transport = pc.addTransceiver("video").receiver.transport
    delivered: list[bytes] = []

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        delivered.append(data)

    transport._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    shaper = aiortc_hooks.IncomingShaper(queue_seconds=0.25, burst_bytes=0, overhead=0)
    aiortc_hooks.shape_incoming_rtp(transport, shaper)
    await transport._handle_rtp_data(b"a" * 1000, 0)  # no limit yet: at once
    assert delivered == [b"a" * 1000]
    shaper.rate = 80_000  # 1000 bytes per 0.1 s
    for tag in b"bcd":
        await transport._handle_rtp_data(bytes([tag]) * 1000, 0)
    assert shaper.dropped == 1  # d would have waited 0.3 s
    await asyncio.sleep(0.05)
    assert len(delivered) == 1
    await asyncio.sleep(0.25)
    assert [d[:1] for d in delivered] == [b"a", b"b", b"c"]


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
    assert rtp_sender.DirectRtpSender(sender).send([bytes(100)], [(1, 2)], 3, 4, 88) == 0
    assert aiortc_hooks.sender_report_state(sender) == (0, 0, 0, 0)


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


async def _until(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within 3 s (polled every 10 ms)."""
    for _ in range(300):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


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
        aiortc_hooks.filter_incoming_rtp(remote.getTransceivers()[0].receiver.transport, keep)
        direct = rtp_sender.DirectRtpSender(sender)
        template = RtpPacket(payload_type=VP8.payloadType, payload=b"\x10" + bytes(999))
        serialized = template.serialize()
        dtls = sender.transport
        packets_before = dtls._RTCDtlsTransport__tx_packets
        sent = direct.send(
            [serialized] * 3,
            [(7 + i, 90000 * i) for i in range(3)],
            sender._ssrc,
            7 << 32,
            3000,
        )
        assert sent == 3 * len(serialized)  # the RTP bytes, without SRTP's
        assert dtls._RTCDtlsTransport__tx_packets == packets_before + 3
        assert direct.datagram_socket is not None  # asyncio's transport: straight to its socket
        # the next sender report: the batch's NTP time, its last packet's RTP timestamp,
        # the payload bytes and the packets
        assert aiortc_hooks.sender_report_state(sender) == (7 << 32, 180000, 3000, 3)
        assert direct.send([], [], sender._ssrc, 8 << 32, 0) == 0  # nothing to send
        assert aiortc_hooks.sender_report_state(sender) == (7 << 32, 180000, 3000, 3)
        assert await _until(lambda: len(arrived) == 3)
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
        assert direct.send([serialized], [(10, 0)], sender._ssrc, 8 << 32, 1000) == 0
        assert aiortc_hooks.sender_report_state(sender) == (7 << 32, 180000, 3000, 3)
    finally:
        await remote.close()


# DirectRtpSender's batched sends (UDP GSO) and drain_datagrams, between real peers

UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
RTP_HEADER = 12  # the templates here have no header extension


@dataclass
class _Link:
    """A sending peer's video and audio senders (bundled on one DTLS transport), each with
    a ``DirectRtpSender``, connected to a receiving peer over this machine's address."""

    pc: RTCPeerConnection
    remote: RTCPeerConnection
    video_sender: RTCRtpSender
    audio_sender: RTCRtpSender
    video: rtp_sender.DirectRtpSender
    audio: rtp_sender.DirectRtpSender
    # the parameters aiortc started each sender with, by kind
    started: dict[str, RTCRtpSendParameters]
    # the RTP the receiving peer decrypted, in the order it did (SRTP authenticates each
    # datagram: one cut at the wrong place is dropped, not decrypted)
    arrived: list[bytes] = field(default_factory=list)
    # whether the receiving peer's receivers also get them (else only ``arrived`` does)
    deliver: bool = False
    # the bytes SRTP adds to each packet (its authentication tag)
    tag: int = 0

    @property
    def receiving(self) -> RTCDtlsTransport:
        transport: RTCDtlsTransport = self.remote.getTransceivers()[0].receiver.transport
        return transport

    def sender(self, kind: str) -> RTCRtpSender:
        return self.video_sender if kind == "video" else self.audio_sender

    def direct(self, kind: str) -> rtp_sender.DirectRtpSender:
        return self.video if kind == "video" else self.audio

    def payload_type(self, sender: RTCRtpSender) -> int:
        return _payload_type(next(t for t in self.pc.getTransceivers() if t.sender is sender))

    def protected(self, payload_sizes: Sequence[int]) -> list[int]:
        """The datagrams' sizes of packets with these payloads: header, payload, SRTP tag."""
        return [RTP_HEADER + size + self.tag for size in payload_sizes]


def _payload_type(transceiver: RTCRtpTransceiver) -> int:
    """The payload type of the transceiver's negotiated codec."""
    payload_type = transceiver._codecs[0].payloadType
    assert payload_type is not None
    return payload_type


@asynccontextmanager
async def _linked(pc: RTCPeerConnection) -> AsyncIterator[_Link]:
    """``pc`` sending video and audio to a new receiving peer (closed on exit)."""
    from sfu.viewer import _IdleTrack

    video = pc.addTransceiver(_IdleTrack("video"), direction="sendonly").sender
    audio = pc.addTransceiver(_IdleTrack("audio"), direction="sendonly").sender
    started: dict[str, RTCRtpSendParameters] = {}
    for kind, sender in (("video", video), ("audio", audio)):

        async def on_started(parameters: RTCRtpSendParameters, kind: str = kind) -> None:
            started[kind] = parameters

        aiortc_adapter.on_sender_started(sender, on_started)
    remote = RTCPeerConnection(client_configuration())
    try:
        remote.addTransceiver("video", direction="recvonly")
        remote.addTransceiver("audio", direction="recvonly")
        await _connect(pc, remote)
        assert await _until(lambda: len(started) == 2)
        assert video.transport is audio.transport  # bundled, as browsers and aiortc do
        link = _Link(
            pc,
            remote,
            video,
            audio,
            rtp_sender.DirectRtpSender(video),
            rtp_sender.DirectRtpSender(audio),
            started,
        )

        def keep(data: bytes) -> bool:
            link.arrived.append(data)
            return link.deliver

        aiortc_hooks.filter_incoming_rtp(link.receiving, keep)
        # bound now (send would bind them), so that a test may stand in for their socket
        for direct in (link.video, link.audio):
            bound = direct.bind()
            assert bound
            assert direct.datagram_socket is not None  # asyncio's transport: its socket is used
        # protected with the transport's session, under an SSRC nobody sends
        probe = RtpPacket(payload_type=0, ssrc=0x5EED, payload=bytes(100)).serialize()
        link.tag = len(video.transport._tx_srtp.protect(probe)) - len(probe)
        assert 0 < link.tag <= SRTP_MAX_TRAILER_LEN
        yield link
    finally:
        await remote.close()


@pytest.fixture
async def link(pc: RTCPeerConnection) -> AsyncIterator[_Link]:
    async with _linked(pc) as link:
        yield link


@dataclass(frozen=True)
class _Rtp:
    sequence_number: int
    timestamp: int
    payload: bytes
    marker: bool = False


def _stream(first: int, payload_sizes: Sequence[int]) -> list[_Rtp]:
    """Packets numbered from ``first``, each with its own timestamp and payload content."""
    return [
        _Rtp(first + i, 3000 * (first + i), bytes([(first + i) % 251]) * size)
        for i, size in enumerate(payload_sizes)
    ]


def _send(
    direct: rtp_sender.DirectRtpSender, ssrc: int, payload_type: int, packets: list[_Rtp]
) -> None:
    """Send ``packets`` in one call, as a down track sends its share of a producer's batch."""
    templates = [
        RtpPacket(payload_type=payload_type, marker=int(p.marker), payload=p.payload).serialize()
        for p in packets
    ]
    sent = direct.send(
        templates,
        [(p.sequence_number, p.timestamp) for p in packets],
        ssrc,
        packets[-1].sequence_number << 32,
        sum(len(p.payload) for p in packets),
    )
    assert sent == sum(map(len, templates))


async def _decrypted(link: _Link, ssrc: int, count: int) -> list[RtpPacket]:
    """The packets of ``ssrc`` the receiving peer decrypted, once ``count`` are there (or
    after 3 s)."""
    packets: list[RtpPacket] = []

    def enough() -> bool:
        nonlocal packets
        packets = [p for p in map(RtpPacket.parse, link.arrived) if p.ssrc == ssrc]
        return len(packets) >= count

    await _until(enough)
    return packets


async def _arrivals(link: _Link, ssrc: int, count: int) -> list[_Rtp]:
    return [
        _Rtp(p.sequence_number, p.timestamp, p.payload, bool(p.marker))
        for p in await _decrypted(link, ssrc, count)
    ]


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
        self.native_hook: Any = None

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


def _spy(direct: rtp_sender.DirectRtpSender, **refusals: int) -> _SocketSpy:
    """Watch what ``direct`` sends, from Python and from the C loop (``sfu.native``)."""
    spy = _SocketSpy(direct.datagram_socket, **refusals)
    direct._socket = spy  # type: ignore[assignment]  # the spy stands in for the socket
    if native.available():
        address = direct.remote_address

        def send(hook_data: Any, data: Any, length: int, segment: int) -> int:
            payload = bytes(native.ffi.buffer(data, length))
            try:
                if segment:
                    cmsg = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment))]
                    return spy.sendmsg((payload,), cmsg, 0, address)
                return spy.sendto(payload, address)
            except OSError as error:
                return -(error.errno or errno.EIO)

        hook = native.ffi.callback("long(void *, void *, int, int)", send)
        spy.native_hook = hook  # kept alive with the spy
        direct.native_send_hook = hook
        if direct.held_target is not None:
            direct.held_target.send_hook = hook
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
    dtls = link.video_sender.transport
    tx_before = (dtls._RTCDtlsTransport__tx_packets, dtls._RTCDtlsTransport__tx_bytes)
    _send(link.video, link.video_sender._ssrc, link.payload_type(link.video_sender), video)
    _send(link.audio, link.audio_sender._ssrc, link.payload_type(link.audio_sender), audio)
    # sent before ``send`` returned (nothing waits for the event loop), each viewer's
    # packets from the same scratch buffer: one sendmsg per run of same-size datagrams, its
    # last one shorter; a lone one: sendto
    datagrams = link.protected(VIDEO_BURST)
    assert video_spy.sent == [
        _Sent("sendmsg", tuple(datagrams[VIDEO_RUNS[0]])),
        _Sent("sendmsg", tuple(datagrams[VIDEO_RUNS[1]])),
        _Sent("sendto", tuple(datagrams[VIDEO_RUNS[2]])),
    ]
    assert audio_spy.sent == [_Sent("sendto", tuple(link.protected([160])))]
    assert video_spy.refused == audio_spy.refused == []
    assert link.video.gso
    # what aiortc's statistics and sender reports count
    assert (dtls._RTCDtlsTransport__tx_packets, dtls._RTCDtlsTransport__tx_bytes) == (
        tx_before[0] + len(video) + len(audio),
        tx_before[1] + sum(datagrams) + sum(link.protected([160])),
    )
    assert aiortc_hooks.sender_report_state(link.video_sender) == (
        video[-1].sequence_number << 32,
        video[-1].timestamp,
        sum(VIDEO_BURST),
        len(VIDEO_BURST),
    )
    assert aiortc_hooks.sender_report_state(link.audio_sender)[2:] == (160, 1)

    assert await _arrivals(link, link.video_sender._ssrc, len(video)) == video
    assert await _arrivals(link, link.audio_sender._ssrc, 1) == audio
    stats = await link.pc.getStats()
    transport_stats = next(s for s in stats.values() if s.type == "transport")
    assert transport_stats.packetsSent >= len(video) + len(audio)


@pytest.mark.parametrize("gso_sends", [0, 1])
async def test_where_gso_is_refused_the_packets_go_one_at_a_time(
    link: _Link, gso_sends: int
) -> None:
    spy = _spy(link.video, gso_sends=gso_sends)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    burst = _stream(100, VIDEO_BURST)
    _send(link.video, ssrc, payload_type, burst)
    datagrams = link.protected(VIDEO_BURST)

    assert await _arrivals(link, ssrc, len(burst)) == burst
    assert spy.refused == [("sendmsg", errno.EIO)]
    assert not link.video.gso
    taken = datagrams[VIDEO_RUNS[0]] if gso_sends else []  # the run GSO took before it failed
    expected = [_Sent("sendmsg", tuple(taken))] if taken else []
    expected += [_Sent("sendto", (size,)) for size in datagrams[len(taken) :]]
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
    through_transport = _count_rtp_sendto(link.video.transport)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    burst = _stream(100, VIDEO_BURST)
    _send(link.video, ssrc, payload_type, burst)
    datagrams = link.protected(VIDEO_BURST)

    assert await _arrivals(link, ssrc, len(burst)) == burst
    assert len(spy.refused) == 1
    assert spy.datagrams == datagrams[:taken]
    assert through_transport == datagrams[taken:]
    assert link.video.gso  # EAGAIN is no reason to give GSO up


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
    video_spy, audio_spy = _spy(link.video, room=0), _spy(link.audio)
    transport = link.video.transport
    assert link.audio.transport is transport  # bundled: one socket, one queue
    through_transport = _count_rtp_sendto(transport)
    real = transport._sock
    transport._sock = full = _FullOnce(real)
    video_ssrc, video_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    audio_ssrc, audio_type = link.audio_sender._ssrc, link.payload_type(link.audio_sender)
    first, second = _stream(100, VIDEO_BURST), _stream(200, VIDEO_BURST)
    audio = _stream(500, [160] * 3)
    try:
        _send(link.video, video_ssrc, video_type, first)
        # the socket refused the first send, so did the transport's: it queued them all,
        # as copies (the scratch buffer they were protected in is the next send's)
        assert video_spy.refused == [("sendmsg", errno.EAGAIN)]
        assert full.refused == 1
        assert len(transport._buffer) >= len(first)
        _send(link.audio, audio_ssrc, audio_type, audio)
        _send(link.video, video_ssrc, video_type, second)
        # behind the transport's queue, not on the socket (which would overtake it)
        assert video_spy.refused == [("sendmsg", errno.EAGAIN)]
        assert video_spy.sent == audio_spy.sent == audio_spy.refused == []
        assert through_transport == link.protected(VIDEO_BURST + [160] * 3 + VIDEO_BURST)
        assert await _arrivals(link, video_ssrc, len(first) + len(second)) == first + second
        assert await _arrivals(link, audio_ssrc, len(audio)) == audio
        # in the order they were sent, across the two senders
        order = [p.ssrc for p in map(RtpPacket.parse, link.arrived)]
        assert order == [video_ssrc] * len(first) + [audio_ssrc] * len(audio) + [video_ssrc] * len(
            second
        )
    finally:
        transport._sock = real


def _filling(tag: int) -> list[int]:
    """Payload sizes of 1.2 KB packets whose first ones fill the scratch buffer to its last
    byte: the last of those fits in what ``_BATCH_BYTES`` leaves, and its SRTP tag takes the
    room left for it. (aiortc's SRTP sessions take at most 1.5 KB packets.)"""
    full, left = divmod(rtp_sender._BATCH_BYTES, 1200 + tag)
    assert RTP_HEADER < left <= 1200
    return [1200 - RTP_HEADER] * full + [left - RTP_HEADER] + [1200 - RTP_HEADER] * 5


@pytest.mark.parametrize(("fill", "room"), [("1.2KB", None), ("1.2KB", 0), ("exactly", None)])
async def test_more_than_the_scratch_buffer_in_one_send_leaves_as_it_fills(
    link: _Link, fill: str, room: int | None
) -> None:
    spy = _spy(link.video) if room is None else _spy(link.video, room=room)
    through_transport = _count_rtp_sendto(link.video.transport)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    # 72 KB of 1.2 KB packets, or a buffer's worth to its last byte and a few more
    sizes = [1200 - RTP_HEADER] * 60 if fill == "1.2KB" else _filling(link.tag)
    burst = _stream(1000, sizes)
    _send(link.video, ssrc, payload_type, burst)
    datagrams = link.protected(sizes)

    assert await _arrivals(link, ssrc, len(burst)) == burst
    if room is not None:
        # refused, the first buffer went through the transport; the second queued behind
        # it, after it was protected in the same scratch buffer
        assert spy.sent == []
        assert spy.refused == [("sendmsg", errno.EAGAIN)] * 2
        assert through_transport == datagrams
        return
    # one GSO send when the buffer was full, one for the rest
    assert [sent.call for sent in spy.sent] == ["sendmsg", "sendmsg"]
    assert spy.datagrams == datagrams
    assert through_transport == []
    early = len(spy.sent[0].sizes)
    held = sum(spy.sent[0].sizes)
    # the buffer was full: the next template did not fit in _BATCH_BYTES
    assert held - link.tag <= rtp_sender._BATCH_BYTES < held + RTP_HEADER + sizes[early]
    # the scratch buffer holds it, and so does one UDP send
    assert held <= rtp_sender._BATCH_BYTES + SRTP_MAX_TRAILER_LEN
    assert held <= 65507
    if fill == "exactly":
        assert held == rtp_sender._BATCH_BYTES + link.tag
        assert early == len(sizes) - 5


async def test_a_template_larger_than_the_scratch_buffer_is_left_out(link: _Link) -> None:
    spy = _spy(link.video)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)
    burst = _stream(100, [1000, rtp_sender._BATCH_BYTES, 1000])
    templates = [RtpPacket(payload_type=payload_type, payload=p.payload).serialize() for p in burst]
    sent = link.video.send(
        templates, [(p.sequence_number, p.timestamp) for p in burst], ssrc, 1 << 32, 2000
    )
    assert sent == len(templates[0]) + len(templates[2])
    assert spy.sent == [_Sent("sendmsg", tuple(link.protected([1000, 1000])))]
    assert await _arrivals(link, ssrc, 2) == [burst[0], burst[2]]
    assert aiortc_hooks.sender_report_state(link.video_sender)[2:] == (2000, 2)


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
    await _until(lambda: sum(map(len, readiness.of(junk))) == len(junk))
    batches = readiness.of(junk)
    assert [d for batch in batches for d in batch] == junk  # all, in order
    return [len(batch) for batch in batches]


def _drained(link: _Link) -> tuple[Any, _Readiness]:
    """The receiving side's ICE protocol, drained, with each readiness's datagrams recorded."""
    protocol = _nominated_protocol(link.receiving)
    readiness = _Readiness()
    readiness.below(protocol)
    aiortc_adapter.drain_datagrams(link.receiving)
    readiness.above(protocol)
    return protocol, readiness


async def test_drain_datagrams_reads_up_to_32_datagrams_per_readiness(link: _Link) -> None:
    protocol, readiness = _drained(link)

    assert await _read_junk_in_batches(protocol, readiness, 40) == [32, 8]


async def test_a_burst_sent_with_gso_is_read_in_one_readiness(link: _Link) -> None:
    protocol, readiness = _drained(link)
    spy = _spy(link.video)
    ssrc, payload_type = link.video_sender._ssrc, link.payload_type(link.video_sender)

    burst = _stream(100, [1000] * 10)
    protocol.transport.pause_reading()
    _send(link.video, ssrc, payload_type, burst)
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
    assert await _until(lambda: len(set(tapped)) == 2)
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
        direct = rtp_sender.DirectRtpSender(video.sender)
        packets = _stream(1, [1000] * 3)
        _send(direct, video.sender._ssrc, _payload_type(video), packets)
        assert await _until(lambda: len(tapped) == len(packets))
        assert tapped == [video.sender._ssrc] * len(packets)
        readiness.above(protocol)

        assert await _read_junk_in_batches(protocol, readiness, 40) == [32, 8]
        sock = protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(
            aiortc_adapter.INGEST_RECEIVE_BUFFER, RMEM_MAX
        )
    finally:
        await remote.close()


# When a Producer forwards: its batches, between real peers (publisher → SFU → viewer)

VP8_KEYFRAME_START = b"\x10\x00\x9d\x01\x2a"  # descriptor S=1, PID 0; payload header P=0


@dataclass
class _Relay:
    """A publisher's packets reach the SFU's peer (``ingest``), where a ``Producer`` per
    kind taps the receiver; a ``DownTrack`` per kind forwards them on the SFU's senders to
    a viewer (``egress``), each through a ``DirectRtpSender`` whose socket ``spies``
    watch."""

    ingest: _Link
    egress: _Link
    producers: dict[str, Producer]
    down_tracks: dict[str, DownTrack]
    spies: dict[str, _SocketSpy] = field(default_factory=dict)
    next_sequence_number: dict[str, int] = field(default_factory=lambda: {"video": 1, "audio": 1})

    def packets(
        self, kind: str, payload_sizes: Sequence[int], *, keyframe: bool = False, marker: bool
    ) -> list[_Rtp]:
        """The publisher's next packets of ``kind``; video ones are a frame (one
        timestamp), its first a keyframe's if ``keyframe``, its last with the marker bit
        if ``marker``."""
        first = self.next_sequence_number[kind]
        self.next_sequence_number[kind] += len(payload_sizes)
        packets = []
        for i, size in enumerate(payload_sizes):
            number = first + i
            if kind == "video":
                head = VP8_KEYFRAME_START if keyframe and i == 0 else b"\x00"
                payload = head + bytes([number % 251]) * (size - len(head))
                timestamp = 3000 * first
            else:
                payload = bytes([number % 251]) * size
                timestamp = 960 * number
            last = i == len(payload_sizes) - 1
            packets.append(_Rtp(number, timestamp, payload, marker and last))
        return packets

    def publish(self, kind: str, packets: list[_Rtp]) -> None:
        sender = self.ingest.sender(kind)
        _send(self.ingest.direct(kind), sender._ssrc, self.ingest.payload_type(sender), packets)

    async def forwarded(self, kind: str, count: int) -> list[RtpPacket]:
        """What the viewer decrypted of ``kind``, once ``count`` packets are there (or
        after 3 s)."""
        return await _decrypted(self.egress, self.egress.sender(kind)._ssrc, count)

    def close(self) -> None:
        for kind in ("video", "audio"):
            self.down_tracks[kind].close("test_ended")
            self.producers[kind].close("test_ended")


async def _start_relay(ingest: _Link, egress: _Link) -> _Relay:
    ingest.deliver = True  # the SFU's receivers get the publisher's packets
    producers: dict[str, Producer] = {}
    down_tracks: dict[str, DownTrack] = {}
    for transceiver in ingest.remote.getTransceivers():
        kind = transceiver.kind
        codec = transceiver._codecs[0]
        assert codec.mimeType in ("video/VP8", "audio/opus")  # what the packets here are
        producers[kind] = Producer(
            router_id="relay",
            publisher_id="publisher",
            kind=kind,
            codec=codec,
            receiver=transceiver.receiver,
            cache_size=64,
            keyframe_request_interval=1.0,
            emit=lambda event: None,
            native_forwarding=NATIVE_FORWARDING,
        )
        down_tracks[kind] = DownTrack(
            router_id="relay",
            viewer_id="viewer",
            producer=producers[kind],
            sender=egress.sender(kind),
            munger=RtpMunger(codec.clockRate, native=NATIVE_FORWARDING),
            emit=lambda event: None,
            on_close=lambda down_track: None,
        )
        await down_tracks[kind].start(egress.started[kind])
    relay = _Relay(ingest, egress, producers, down_tracks)
    # a first packet of each kind: the video down track starts on a keyframe, the SFU's
    # socket is drained from now on, and each down track's DirectRtpSender binds
    relay.publish("video", relay.packets("video", [100], keyframe=True, marker=True))
    relay.publish("audio", relay.packets("audio", [100], marker=False))
    for kind in ("video", "audio"):
        assert len(await relay.forwarded(kind, 1)) == 1
        direct = down_tracks[kind].rtp_sender
        assert direct is not None
        assert direct.datagram_socket is not None
        relay.spies[kind] = _spy(direct)
    return relay


@pytest.fixture
async def relay() -> AsyncIterator[_Relay]:
    publisher = RTCPeerConnection(client_configuration())
    server = RTCPeerConnection(client_configuration())
    try:
        async with _linked(publisher) as ingest, _linked(server) as egress:
            relay = await _start_relay(ingest, egress)
            try:
                yield relay
            finally:
                relay.close()
    finally:
        await server.close()
        await publisher.close()


async def _handed_over_together(relay: _Relay, kind: str, packets: list[_Rtp]) -> None:
    """Publish ``packets`` so that the SFU reads them in one readiness of its socket (it
    drains up to 32), and so hands them to the producer in one turn of the event loop."""
    reading = _nominated_protocol(relay.ingest.receiving).transport
    received = relay.producers[kind].packets_received
    reading.pause_reading()
    try:
        relay.publish(kind, packets)
        await asyncio.sleep(0.05)  # loopback delivers at once; this leaves the kernel leeway
    finally:
        reading.resume_reading()
    assert await _until(lambda: relay.producers[kind].packets_received == received + len(packets))


def _continuous(packets: list[RtpPacket]) -> bool:
    """One outgoing stream: consecutive sequence numbers."""
    first = packets[0].sequence_number
    return [(p.sequence_number - first) & 0xFFFF for p in packets] == list(range(len(packets)))


async def test_a_video_frame_waits_for_its_last_packet_and_leaves_with_it_in_one_send(
    relay: _Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "FRAME_HOLD_SECONDS", 10.0)  # no timer interferes
    producer, spy = relay.producers["video"], relay.spies["video"]
    frame = relay.packets("video", [1000] * 3 + [437], marker=True)
    received = producer.packets_received

    relay.publish("video", frame[:3])
    assert await _until(lambda: producer.packets_received == received + 3)
    await asyncio.sleep(0.05)  # turns of the event loop go by: the frame's start waits
    assert spy.sent == []
    assert producer.held_packets == 3
    assert len(await relay.forwarded("video", 1)) == 1  # the first packet only

    relay.publish("video", frame[3:])
    forwarded = await relay.forwarded("video", 1 + len(frame))
    assert [(p.payload, bool(p.marker)) for p in forwarded[1:]] == [
        (p.payload, p.marker) for p in frame
    ]
    assert _continuous(forwarded)
    assert len({p.timestamp for p in forwarded[1:]}) == 1  # one frame
    # the whole frame in one GSO send: its first packets, and its shorter last
    assert [sent.call for sent in spy.sent] == ["sendmsg"]
    sizes = spy.datagrams
    assert len(sizes) == len(frame)
    assert sizes[:3] == [sizes[0]] * 3
    assert sizes[3] < sizes[0]
    assert relay.down_tracks["video"].packets_sent == 1 + len(frame)
    assert not producer.flush_scheduled
    assert producer.held_packets == 0


async def test_a_frame_whose_last_packet_never_comes_leaves_after_frame_hold_seconds(
    relay: _Relay,
) -> None:
    assert producer_module.FRAME_HOLD_SECONDS <= 0.1
    producer, spy = relay.producers["video"], relay.spies["video"]
    start = relay.packets("video", [1000] * 3, marker=False)  # its marker is lost

    await _handed_over_together(relay, "video", start)
    forwarded = await relay.forwarded("video", 1 + len(start))
    assert [(p.payload, bool(p.marker)) for p in forwarded[1:]] == [
        (p.payload, False) for p in start
    ]
    # held together until the timer, then sent together
    assert [sent.call for sent in spy.sent] == ["sendmsg"]
    assert len(spy.datagrams) == len(start)
    assert not producer.flush_scheduled

    # the next frame is forwarded as usual
    frame = relay.packets("video", [1000, 500], marker=True)
    relay.publish("video", frame)
    forwarded = await relay.forwarded("video", 1 + len(start) + len(frame))
    assert [p.payload for p in forwarded[1 + len(start) :]] == [p.payload for p in frame]
    assert _continuous(forwarded)
    assert len(spy.datagrams) == len(start) + len(frame)


async def test_audio_handed_over_together_leaves_together_when_the_loop_turn_ends(
    relay: _Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "FRAME_HOLD_SECONDS", 10.0)  # audio never waits
    spy = relay.spies["audio"]
    packets = relay.packets("audio", [160] * 4, marker=False)

    await _handed_over_together(relay, "audio", packets)
    forwarded = await relay.forwarded("audio", 1 + len(packets))
    assert [p.payload for p in forwarded[1:]] == [p.payload for p in packets]
    assert _continuous(forwarded)
    assert [sent.call for sent in spy.sent] == ["sendmsg"]
    assert len(spy.datagrams) == len(packets)
    assert not relay.producers["audio"].flush_scheduled
    assert relay.down_tracks["audio"].packets_sent == 1 + len(packets)


async def test_a_long_frame_leaves_in_parts_of_frame_hold_packets_as_it_arrives(
    relay: _Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "FRAME_HOLD_SECONDS", 10.0)  # no timer interferes
    limit = producer_module.FRAME_HOLD_PACKETS
    producer, spy = relay.producers["video"], relay.spies["video"]
    keyframe = relay.packets("video", [1000] * (limit + 3), marker=True)
    received = producer.packets_received

    relay.publish("video", keyframe[:limit])  # no marker yet, but as many as may wait
    assert await _until(lambda: producer.packets_received == received + limit)
    forwarded = await relay.forwarded("video", 1 + limit)
    assert [p.payload for p in forwarded[1:]] == [p.payload for p in keyframe[:limit]]

    relay.publish("video", keyframe[limit:])
    forwarded = await relay.forwarded("video", 1 + len(keyframe))
    assert [p.payload for p in forwarded[1:]] == [p.payload for p in keyframe]
    assert _continuous(forwarded)
    assert len(spy.datagrams) == len(keyframe)
    assert not producer.flush_scheduled


needs_native = needs_c_loop


def _relayed(relay: _Relay, kind: str, payload_sizes: Sequence[int]) -> list[int]:
    """The sizes of the datagrams the SFU sends the viewer for these payloads: the group's
    header (with its extensions: mid, abs-send-time), payload, SRTP tag."""
    group = relay.down_tracks[kind].group
    assert group is not None
    header = len(group.render(RtpPacket(payload=b"x"), 0)) - 1
    return [header + size + relay.egress.tag for size in payload_sizes]


def _in_c_loop(relay: _Relay, kind: str) -> bool:
    down_track = relay.down_tracks[kind]
    group = down_track.group
    return (
        down_track.forwarded_natively
        and group is not None
        and group.targets is not None
        and down_track in group.targets
        and down_track not in group.python_forwarders
    )


@needs_native
async def test_the_c_loop_takes_over_once_the_stream_is_based_and_counts_what_it_sent(
    relay: _Relay,
) -> None:
    # the first packet of each kind went through the Python loop (it based the mapping)
    assert _in_c_loop(relay, "video")
    assert _in_c_loop(relay, "audio")
    spy = relay.spies["video"]
    frame = relay.packets("video", [1000] * 4 + [300], marker=True)
    relay.publish("video", frame)
    forwarded = await relay.forwarded("video", 1 + len(frame))
    assert [p.payload for p in forwarded[1:]] == [p.payload for p in frame]
    assert _continuous(forwarded)  # one stream across the hand-over
    assert spy.sent == [_Sent("sendmsg", tuple(_relayed(relay, "video", [1000] * 4 + [300])))]
    down_track = relay.down_tracks["video"]
    assert down_track.packets_sent == 1 + len(frame)
    datagrams = _relayed(relay, "video", [len(p.payload) for p in forwarded])
    assert down_track.bytes_sent == sum(datagrams) - relay.egress.tag * len(forwarded)  # RTP
    # what the C loop sent reaches the next sender report, with its last packet's time pair
    ntp, rtp_timestamp, octets, packets = aiortc_hooks.sender_report_state(down_track.sender)
    assert (rtp_timestamp, octets, packets) == (
        forwarded[-1].timestamp,
        sum(len(p.payload) for p in forwarded),
        1 + len(frame),
    )
    assert ntp > 0


@needs_native
async def test_where_the_kernel_refuses_gso_the_c_loop_sends_one_datagram_at_a_time(
    relay: _Relay,
) -> None:
    spy = _spy(relay.down_tracks["video"].rtp_sender, gso_sends=0)  # type: ignore[arg-type]
    sizes = [1000] * 3 + [200]
    for count in (1, 2):
        frame = relay.packets("video", sizes, marker=True)
        relay.publish("video", frame)
        forwarded = await relay.forwarded("video", 1 + count * len(frame))
        assert [p.payload for p in forwarded[-len(frame) :]] == [p.payload for p in frame]
    assert _continuous(forwarded)
    # refused once; from then on one datagram at a time, in the next frame too
    assert spy.refused == [("sendmsg", errno.EIO)]
    assert spy.sent == [_Sent("sendto", (size,)) for size in _relayed(relay, "video", sizes * 2)]
    assert _in_c_loop(relay, "video")


@needs_native
async def test_what_a_socket_refuses_from_the_c_loop_is_queued_and_the_viewer_comes_back(
    relay: _Relay,
) -> None:
    down_track = relay.down_tracks["video"]
    direct = down_track.rtp_sender
    assert direct is not None
    through_transport = _count_rtp_sendto(direct.transport)
    spy = _spy(direct, room=2)  # the socket takes 2 datagrams, then would block
    sizes = [1000] * 2 + [400] + [1000] * 3 + [300]  # a GSO run of 3, then one of 4
    first = relay.packets("video", sizes[:3], marker=False)
    rest = relay.packets("video", sizes[3:], marker=True)
    await _handed_over_together(relay, "video", first + rest)
    forwarded = await relay.forwarded("video", 1 + len(sizes))
    # every packet arrived once, in order, in one stream
    assert [p.payload for p in forwarded[1:]] == [p.payload for p in first + rest]
    assert _continuous(forwarded)
    # the C loop's first send (3 datagrams) did not fit: that frame went through the
    # transport, and the viewer was handed back to the Python loop
    assert spy.sent == []
    assert spy.refused == [("sendmsg", errno.EAGAIN)]
    assert through_transport == _relayed(relay, "video", sizes)
    assert down_track.packets_sent == 1 + len(sizes)
    # the transport has drained: with the next frame the C loop takes the viewer back
    spy._room = None
    for _ in range(2):
        frame = relay.packets("video", [500, 200], marker=True)
        relay.publish("video", frame)
        forwarded = await relay.forwarded("video", len(forwarded) + len(frame))
    assert _continuous(forwarded)
    assert _in_c_loop(relay, "video")
    assert spy.datagrams == _relayed(relay, "video", [500, 200] * 2)


@needs_native
async def test_the_c_loop_sends_on_its_own_descriptor_closed_with_the_down_track(
    relay: _Relay,
) -> None:
    """A duplicate of the ICE socket's descriptor: if aiortc closes the socket while the C
    loop still holds the target, the number can be reused by another socket, the duplicate
    cannot."""
    down_track = relay.down_tracks["video"]
    direct, target = down_track.rtp_sender, down_track.native_target
    assert direct is not None
    assert target is not None
    sock = direct.transport._sock
    assert target.fd != sock.fileno()
    assert os.fstat(target.fd).st_ino == os.fstat(sock.fileno()).st_ino  # the same socket
    duplicate = target.fd
    del target  # the descriptor is the target's: it closes when nothing holds the target
    down_track.close("test_ended")
    assert not down_track.forwarded_natively
    assert direct.held_target is None
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(duplicate)


async def test_decoder_threads_are_daemons() -> None:
    """A receiver's decoder thread (a publisher's, on the server) cannot keep a stopping
    process alive."""
    router = Router(options())
    clients = TestClients()
    try:
        _, session = await clients.publish(router)
        assert await wait_until(lambda: len(router.producers) == 2 and session.connected.is_set())
        assert await wait_until(lambda: all(decoder_thread_of(p) for p in router.producers))
        threads = [decoder_thread_of(p) for p in router.producers]
        assert all(t is not None and t.daemon and t.is_alive() for t in threads)
    finally:
        await clients.close()
        await router.close()
    assert not any(t is not None and t.is_alive() for t in threads)


def decoder_thread_of(producer: Producer) -> threading.Thread | None:
    return aiortc_hooks.decoder_thread(producer.receiver)


async def test_send_sender_report_sends_what_aiortc_would_and_aiortc_times_its_answer(
    pc: RTCPeerConnection,
) -> None:
    sender: RTCRtpSender = pc.addTransceiver("video").sender
    assert aiortc_adapter.send_sender_report(sender) is None  # not started
    sent: list[list[AnyRtcpPacket]] = []

    async def send_rtcp(packets: list[AnyRtcpPacket]) -> None:
        sent.append(packets)

    sender._send_rtcp = send_rtcp  # type: ignore[method-assign]
    sender._RTCRtpSender__started = True  # type: ignore[attr-defined]
    try:
        await _send_a_sender_report_and_answer_it(sender, sent)
    finally:  # (a started sender's stop waits for its RTP and RTCP tasks)
        sender._RTCRtpSender__started = False  # type: ignore[attr-defined]


async def _send_a_sender_report_and_answer_it(
    sender: RTCRtpSender, sent: list[list[AnyRtcpPacket]]
) -> None:
    assert aiortc_adapter.send_sender_report(sender) is None  # no RTP sent yet
    aiortc_adapter.count_sender_report(sender, 0x1234_5678_9ABC_DEF0, 90_000, 1200, 3)
    reported = aiortc_adapter.send_sender_report(sender)
    assert reported is not None
    lsr, sent_at = reported
    assert lsr == 0x5678_9ABC
    assert aiortc_adapter.send_sender_report(sender) is None  # nothing new since
    await asyncio.sleep(0)
    [[packet]] = sent
    assert isinstance(packet, RtcpSrPacket)
    assert packet.ssrc == sender._ssrc
    assert (packet.sender_info.rtp_timestamp, packet.sender_info.packet_count) == (90_000, 3)
    assert packet.sender_info.octet_count == 1200
    # aiortc reads the RTT of the answer to it as to its own
    report = RtcpReceiverInfo(
        ssrc=sender._ssrc,
        fraction_lost=0,
        packets_lost=0,
        highest_sequence=0,
        jitter=0,
        lsr=lsr,
        dlsr=65536 // 100,
    )
    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1, reports=[report]))
    rtt = aiortc_adapter.sender_rtt(sender)
    assert rtt is not None
    assert rtt <= time.time() - sent_at


async def test_the_client_hello_goes_out_twice_and_a_lost_flight_again_before_openssls_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SFU as DTLS client (its answer to an encoder's ``a=setup:passive``) sends its
    ClientHello twice at once: FFmpeg's WHIP muxer loses the first (tests/sfu/
    test_ffmpeg_handshake.py). Both lost, the SFU sends the flight again itself after
    ``DTLS_EARLY_RESENDS[0]``: the handshake completes without one expiry of OpenSSL's
    1 s timer."""
    encoder = RTCPeerConnection(client_configuration())
    sfu = RTCPeerConnection(client_configuration())
    dropped: list[bytes] = []
    try:
        encoder.addTransceiver("video", direction="sendonly")
        ice = encoder.getTransceivers()[0].receiver.transport.transport
        recv = ice._recv

        async def drop_the_first_two_dtls_datagrams() -> bytes:
            while True:
                data = await recv()
                if len(dropped) == 2 or not 19 < data[0] < 64:
                    return data
                dropped.append(data)

        ice._recv = drop_the_first_two_dtls_datagrams
        await encoder.setLocalDescription(await encoder.createOffer())
        await sfu.setRemoteDescription(encoder.localDescription)
        aiortc_adapter.hasten_dtls_handshakes(sfu)
        with (
            caplog.at_level("DEBUG", logger="aiortc.rtcdtlstransport"),
            caplog.at_level("DEBUG", logger="sfu.aiortc_adapter"),
        ):
            await sfu.setLocalDescription(await sfu.createAnswer())
            await encoder.setRemoteDescription(sfu.localDescription)
            assert await _until(
                lambda: encoder.connectionState == sfu.connectionState == "connected"
            )
        assert len(dropped) == 2
        assert dropped[0] == dropped[1]  # the ClientHello and its copy
        messages = [r.getMessage() for r in caplog.records]
        assert [m for m in messages if "DTLS flight sent again" in m] == [
            "DTLS flight sent again: no answer within 0.1 s"
        ]
        assert [m for m in messages if "DTLS handling timeout" in m] == []
        # the hooks are gone once connected: the media path calls aioice directly
        sfu_ice = sfu.getTransceivers()[0].receiver.transport.transport
        assert sfu_ice._recv == sfu_ice._connection.recv
        assert sfu_ice._send == sfu_ice._connection.send
    finally:
        await encoder.close()
        await sfu.close()


async def test_as_dtls_server_the_sfu_sends_its_first_flight_once() -> None:
    """The copy is the client's alone: a server's first flight answers a ClientHello the
    client has read."""
    sfu = RTCPeerConnection(client_configuration())
    viewer = RTCPeerConnection(client_configuration())
    received: list[bytes] = []
    try:
        sfu.addTransceiver("video", direction="sendonly")
        aiortc_adapter.hasten_dtls_handshakes(sfu)
        await sfu.setLocalDescription(await sfu.createOffer())
        await viewer.setRemoteDescription(sfu.localDescription)
        await viewer.setLocalDescription(await viewer.createAnswer())
        ice = viewer.getTransceivers()[0].receiver.transport.transport
        recv = ice._recv

        async def record() -> bytes:
            data = await recv()
            if 19 < data[0] < 64:
                received.append(data)
            return data

        ice._recv = record
        await sfu.setRemoteDescription(viewer.localDescription)
        assert await _until(lambda: viewer.connectionState == sfu.connectionState == "connected")
        assert sfu.getTransceivers()[0].receiver.transport._role == "server"
        assert len(received) == len(set(received))
    finally:
        await viewer.close()
        await sfu.close()


async def test_an_idle_sender_reports_the_present_at_its_clock(pc: RTCPeerConnection) -> None:
    sender: RTCRtpSender = pc.addTransceiver("video").sender
    sent: list[list[AnyRtcpPacket]] = []

    async def send_rtcp(packets: list[AnyRtcpPacket]) -> None:
        sent.append(packets)

    sender._send_rtcp = send_rtcp  # type: ignore[method-assign]
    sender._RTCRtpSender__started = True  # type: ignore[attr-defined]
    try:
        last_packet = clock.current_ntp_time() - (1 << 32)  # a second ago
        aiortc_adapter.count_sender_report(sender, last_packet, 0xFFFF_FFF0, 1200, 3)
        assert aiortc_adapter.send_sender_report(sender) is not None
        assert aiortc_adapter.send_sender_report(sender) is None  # nothing new since ...
        # ... but the present, at the RTP clock: a second later (modulo 2^32), each time
        reported = aiortc_adapter.send_sender_report(sender, clock_rate=90_000)
        await asyncio.sleep(0.001)  # (an lsr counts 1/65536 s)
        again = aiortc_adapter.send_sender_report(sender, clock_rate=90_000)
        assert reported is not None
        assert again is not None
        assert again[0] != reported[0]
        await asyncio.sleep(0)
        first, present, _ = (packets[0] for packets in sent)
        assert isinstance(first, RtcpSrPacket)
        assert isinstance(present, RtcpSrPacket)
        elapsed = (present.sender_info.ntp_timestamp - last_packet) / (1 << 32)
        assert 1.0 <= elapsed < 2.0
        expected = (0xFFFF_FFF0 + round(elapsed * 90_000)) & 0xFFFF_FFFF
        assert present.sender_info.rtp_timestamp == expected
        assert reported[0] == (present.sender_info.ntp_timestamp >> 16) & 0xFFFF_FFFF
        assert present.sender_info.packet_count == 3
        # aiortc's own loop goes on from the present: an idle sender repeats it, and when it
        # last did is known
        assert sender._RTCRtpSender__rtp_timestamp != 0xFFFF_FFF0  # type: ignore[attr-defined]
        assert aiortc_adapter.sender_report_sent_at(sender, reported[0]) is None
        assert aiortc_adapter.sender_report_sent_at(sender, again[0]) == again[1]
    finally:
        sender._RTCRtpSender__started = False  # type: ignore[attr-defined]


async def test_a_muxed_stun_protocol_serves_an_aioice_connection_on_the_shared_socket() -> None:
    """What ``MuxedStunProtocol`` relies on in aioice (``StunProtocol``'s constructor,
    ``request``, ``datagram_received``, ``connection_lost``, the connection's
    ``data_received``, ``protocol_lost`` and ``close``): two real aioice connections check,
    connect and exchange data, the SFU's side on the shared socket; closing it leaves the
    socket open and the mux empty."""
    assert list(inspect.signature(StunProtocol.request).parameters) == [
        "self",
        "request",
        "addr",
        "integrity_key",
        "retransmissions",
    ]
    port = free_port("0.0.0.0")
    try:
        mux = await ice_mux.udp_mux(port)
        server = Connection(ice_controlling=False, use_ipv6=False)
        client = Connection(ice_controlling=True, use_ipv6=False)

        async def gather(component: int, addresses: list[str], timeout: int = 5) -> list[Any]:  # noqa: ASYNC109
            return mux.attach(server, component, ice_mux.ipv4_hosts(addresses))[0]

        server.get_component_candidates = gather  # type: ignore[method-assign]
        await asyncio.gather(server.gather_candidates(), client.gather_candidates())
        assert {c.port for c in server.local_candidates} == {port}
        assert [type(p) for p in server._protocols] == [aiortc_adapter.MuxedStunProtocol]
        for local, remote in ((server, client), (client, server)):
            local.remote_username = remote.local_username
            local.remote_password = remote.local_password
            for candidate in remote.local_candidates:
                await local.add_remote_candidate(candidate)
            await local.add_remote_candidate(None)
        await asyncio.wait_for(asyncio.gather(server.connect(), client.connect()), 10)
        assert mux.addresses >= 1  # learned from the client's signed checks
        await client.send(b"\x80 from the client")
        assert await asyncio.wait_for(server.recv(), 5) == b"\x80 from the client"
        await server.send(b"\x80 from the server")
        assert await asyncio.wait_for(client.recv(), 5) == b"\x80 from the server"
        # a request of the server's own (a consent check) gets its answer by transaction
        pair = next(iter(server._nominated.values()))
        await pair.protocol.request(
            server.build_request(pair, nominate=False),
            pair.remote_addr,
            integrity_key=client.local_password.encode("utf8"),
        )
        assert not mux._transactions
        await server.close()
        assert mux.connections == 0
        assert mux.addresses == 0
        assert not mux.closed
        assert mux.transport is not None
        assert not mux.transport.is_closing()
        await client.close()
    finally:
        ice_mux.close_udp_muxes()


async def test_a_ufrag_changed_while_gathering_is_the_one_the_description_tells(
    pc: RTCPeerConnection,
) -> None:
    """``sfu.ice_mux`` makes a colliding ufrag unique as the connection gathers: aiortc
    must write the description from the connection afterwards."""
    pc.addTransceiver("video")
    connection = aiortc_adapter.gatherer_connection(
        pc.getTransceivers()[0].sender.transport.transport.iceGatherer
    )
    gather = connection.get_component_candidates

    async def renaming(component: int, addresses: list[str], timeout: int = 5) -> list[Any]:  # noqa: ASYNC109
        aiortc_adapter.set_local_ufrag(connection, "renamed")
        return await gather(component, addresses, timeout)

    connection.get_component_candidates = renaming  # type: ignore[method-assign]
    await pc.setLocalDescription(await pc.createOffer())
    assert "a=ice-ufrag:renamed" in pc.localDescription.sdp


async def test_a_closed_ice_connections_next_event_is_connection_closed() -> None:
    """aioice answers ``get_event`` of a closed connection with None, at once (what the
    adapter's wrapper is for); through the adapter it is ``ConnectionClosed``."""
    from aioice import ConnectionClosed

    connection = Connection(ice_controlling=False, stun_server=None)
    await connection.close()
    assert await aiortc_adapter.AIOICE_GET_EVENT(connection) is None
    assert isinstance(await connection.get_event(), ConnectionClosed)


async def test_an_ice_transports_monitor_ends_when_its_connection_closed_before_it_began() -> None:
    """aiortc's ``RTCIceTransport._monitor`` waits for ``ConnectionClosed``; for a connection
    closed before it first waited it spun without yielding, and the server hung at 100 %
    CPU (tests/fuzz, under load). Run in a thread of its own: before the fix, this test's
    own loop would never get the time to fail it."""
    from aiortc import RTCIceGatherer, RTCIceTransport

    def monitor_a_closed_connection() -> bool:
        async def run() -> bool:
            transport = RTCIceTransport(RTCIceGatherer())
            await transport.iceGatherer._connection.close()
            await asyncio.wait_for(transport._monitor(), 5)
            return True

        return asyncio.run(run())

    thread_result: list[bool] = []
    thread = threading.Thread(
        target=lambda: thread_result.append(monitor_a_closed_connection()), daemon=True
    )
    thread.start()
    thread.join(10)
    assert thread_result == [True], "the monitor of a closed connection never ended"


# --- what a join costs ---------------------------------------------------------------------


def _certificate(pc: RTCPeerConnection) -> Any:
    (certificate,) = pc._RTCPeerConnection__certificates
    return certificate


async def test_peer_connections_made_here_share_one_certificate() -> None:
    import aiortc.rtcpeerconnection

    first = aiortc_adapter.new_peer_connection(client_configuration())
    second = aiortc_adapter.new_peer_connection(client_configuration())
    other = RTCPeerConnection(client_configuration())
    try:
        assert _certificate(first) is _certificate(second) is aiortc_adapter.shared_certificate()
        assert _certificate(other) is not _certificate(first)  # aiortc's own is left alone
        assert aiortc.rtcpeerconnection.RTCCertificate is RTCCertificate
        # what a description carries: the same fingerprints, computed once
        fingerprints = _certificate(first).getFingerprints()
        assert fingerprints == RTCCertificate.getFingerprints(_certificate(first))
        first.addTransceiver("audio", direction="sendonly")
        await first.setLocalDescription(await first.createOffer())
        sha256 = next(f.value for f in fingerprints if f.algorithm == "sha-256")
        assert f"a=fingerprint:sha-256 {sha256}" in first.localDescription.sdp
    finally:
        for pc in (first, second, other):
            await pc.close()


def test_the_shared_certificate_is_renewed_before_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = aiortc_adapter.shared_certificate()
    assert aiortc_adapter.shared_certificate() is current
    remaining = current.expires - datetime.datetime.now(datetime.UTC)
    monkeypatch.setattr(aiortc_adapter, "CERTIFICATE_RENEW_BEFORE", remaining)
    renewed = aiortc_adapter.shared_certificate()
    assert renewed is not current
    assert renewed.expires >= current.expires


async def test_a_send_transceiver_added_here_gets_no_bitrate_estimator() -> None:
    import aiortc.rtcrtpreceiver

    pc = aiortc_adapter.new_peer_connection(client_configuration())
    try:
        track = AudioStreamTrack()
        transceiver = aiortc_adapter.add_send_transceiver(pc, VideoStreamTrack())
        assert transceiver.direction == "sendonly"
        assert transceiver.receiver._RTCRtpReceiver__remote_bitrate_estimator is None
        assert aiortc.rtcrtpreceiver.RemoteBitrateEstimator is RemoteBitrateEstimator
        assert aiortc_adapter.add_send_transceiver(pc, track).kind == "audio"
        # aiortc's own transceivers still get theirs (a client's REMB comes from it)
        plain = pc.addTransceiver("video")
        assert isinstance(
            plain.receiver._RTCRtpReceiver__remote_bitrate_estimator, RemoteBitrateEstimator
        )
    finally:
        await pc.close()


def test_host_addresses_are_listed_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import aioice.ice

    listed: list[tuple[bool, bool]] = []

    def listing(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        listed.append((use_ipv4, use_ipv6))
        return ["192.0.2.1"]

    monkeypatch.setattr(aiortc_adapter, "AIOICE_GET_HOST_ADDRESSES", listing)
    monkeypatch.setattr(aiortc_adapter, "_host_addresses", {})
    # what aioice's gathering calls
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["192.0.2.1"]
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["192.0.2.1"]
    assert listed == [(True, False)]
    monkeypatch.setattr(aiortc_adapter, "HOST_ADDRESSES_SECONDS", 0.0)
    aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert listed == [(True, False), (True, False)]
