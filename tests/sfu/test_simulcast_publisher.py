"""testpeers.simulcast.SimulcastPublisher against a plain aiortc receiver: what it sends is
what Chromium sends for RID simulcast, and each layer decodes on its own."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtpPacket,
    pack_remb_fci,
)
from aiortc.sdp import SessionDescription
from av import VideoFrame

from sfu.keyframe import is_vp8_keyframe_start
from testpeers import aiortc_hooks, client_configuration, matches_pattern, wait_until
from testpeers.simulcast import (
    SMALL_LAYERS,
    LoopedVp8Source,
    SimulcastPublisher,
    accept_simulcast,
)


@dataclass
class _Received:
    """Every RTP packet the receiving transport decrypted, by SSRC, before aiortc's own
    routing (which would mix the layers in one jitter buffer)."""

    extensions: HeaderExtensionsMap
    packets: dict[int, list[RtpPacket]] = field(default_factory=lambda: defaultdict(list))

    def keep(self, data: bytes) -> bool:
        packet = RtpPacket.parse(data, self.extensions)
        self.packets[packet.ssrc].append(packet)
        return False

    def of(self, ssrc: int) -> list[RtpPacket]:
        return self.packets.get(ssrc, [])


@dataclass
class _Pair:
    publisher: SimulcastPublisher
    receiver_pc: RTCPeerConnection
    received: _Received

    @property
    def video_receiver(self) -> RTCRtpReceiver:
        return next(t.receiver for t in self.receiver_pc.getTransceivers() if t.kind == "video")

    async def send_rtcp(self, packet: RtcpPsfbPacket) -> None:
        await aiortc_hooks.send_rtp(self.video_receiver.transport, bytes(packet))

    async def frames(self, rid: str, count: int) -> bool:
        ssrc = self.publisher.layer(rid).ssrc
        return await wait_until(lambda: sum(p.marker for p in self.received.of(ssrc)) >= count)


Connect = Callable[..., Awaitable[_Pair]]


def _offered_extensions(offer: str) -> HeaderExtensionsMap:
    """The header extensions of the offer's video section, RID ones included."""
    extensions = HeaderExtensionsMap()
    video = next(m for m in SessionDescription.parse(offer).media if m.kind == "video")
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=e.id, uri=e.uri)
                for e in video.rtp.headerExtensions
            ]
        )
    )
    return extensions


async def _connect(publisher: SimulcastPublisher) -> _Pair:
    offer = await publisher.create_offer()
    pc = RTCPeerConnection(client_configuration())
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    received = _Received(_offered_extensions(offer))
    transport = next(t.receiver.transport for t in pc.getTransceivers() if t.kind == "video")
    aiortc_hooks.filter_incoming_rtp(transport, received.keep)
    await publisher.accept_answer(accept_simulcast(str(pc.localDescription.sdp), offer))
    return _Pair(publisher, pc, received)


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    pairs: list[_Pair] = []

    async def make(**options: Any) -> _Pair:
        pair = await _connect(SimulcastPublisher(SMALL_LAYERS, audio=False, **options))
        pairs.append(pair)
        return pair

    yield make
    for pair in pairs:
        await pair.publisher.close()
        await pair.receiver_pc.close()


def _decode(packets: list[RtpPacket]) -> list[VideoFrame]:
    """Each complete frame of one SSRC, decoded by libvpx, from its first keyframe on."""
    codec = av.CodecContext.create("libvpx", "r")
    frames: list[VideoFrame] = []
    data = b""
    started = False
    for packet in packets:
        started = started or is_vp8_keyframe_start(packet.payload)
        if not started:
            continue
        data += vp8_depayload(packet.payload)
        if packet.marker:
            frames.extend(codec.decode(av.Packet(data)))
            data = b""
    return frames


async def test_the_offer_carries_rids_simulcast_and_no_video_ssrcs() -> None:
    publisher = SimulcastPublisher(SMALL_LAYERS)
    try:
        sdp = await publisher.create_offer()
    finally:
        await publisher.close()
    audio, video = sdp.split("m=video")
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n" in video
    assert "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n" in video
    assert [line for line in video.splitlines() if line.startswith("a=rid:")] == [
        "a=rid:q send",
        "a=rid:h send",
        "a=rid:f send",
    ]
    assert "a=simulcast:send q;h;f\r\n" in video
    assert "a=ssrc" not in video
    assert "a=ssrc:" in audio
    assert SessionDescription.parse(sdp).media[1].direction == "sendonly"


async def test_each_layer_is_its_own_ssrc_rid_on_its_first_packets_and_decodes(
    connect: Connect,
) -> None:
    pair: _Pair = await connect(rid_packets=10)
    for spec in SMALL_LAYERS:
        assert await pair.frames(spec.rid, 20), spec.rid
    publisher, received = pair.publisher, pair.received
    assert publisher.simulcast
    assert publisher.sending_rids == ["q", "h", "f"]
    ssrcs = {publisher.layer(spec.rid).ssrc for spec in SMALL_LAYERS}
    assert set(received.packets) == ssrcs  # nothing else, no RTX unasked
    capture_steps = set()
    for spec in SMALL_LAYERS:
        packets = received.of(publisher.layer(spec.rid).ssrc)
        assert [p.extensions.rtp_stream_id for p in packets[:12]] == [spec.rid] * 10 + [None] * 2
        assert {p.extensions.mid for p in packets} == {"0"}
        assert all(p.extensions.abs_send_time is not None for p in packets)
        assert {p.payload_type for p in packets} == {received.of(min(ssrcs))[0].payload_type}
        numbers = [p.sequence_number for p in packets]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(numbers))
        timestamps = sorted({p.timestamp for p in packets})
        capture_steps |= {b - a for a, b in itertools.pairwise(timestamps)}
        frames = _decode(packets)
        assert len(frames) >= 15
        assert (frames[0].width, frames[0].height) == (spec.width, spec.height)
        assert matches_pattern(frames[0]), spec.rid
    # one capture clock: every layer's frames are 1/30 s apart (a late frame skips one)
    assert capture_steps <= {3000, 6000}
    origins = {publisher.layer(spec.rid).timestamp_origin for spec in SMALL_LAYERS}
    assert len(origins) == 3  # per-layer random origins, as browsers have


async def test_with_rid_on_every_packet_every_packet_carries_it(connect: Connect) -> None:
    pair: _Pair = await connect(rid_packets=None)
    assert await pair.frames("f", 10)
    for spec in SMALL_LAYERS:
        packets = pair.received.of(pair.publisher.layer(spec.rid).ssrc)
        assert packets
        assert {p.extensions.rtp_stream_id for p in packets} == {spec.rid}


def _pli(ssrc: int) -> RtcpPsfbPacket:
    return RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=ssrc)


async def _keyframes_after(pair: _Pair, rid: str, mark: int) -> int:
    packets = pair.received.of(pair.publisher.layer(rid).ssrc)[mark:]
    return sum(is_vp8_keyframe_start(p.payload) for p in packets)


@pytest.mark.parametrize("all_layers", [True, False])
async def test_a_pli_on_one_layer_brings_keyframes_like_chromium_or_on_that_layer_only(
    connect: Connect, all_layers: bool
) -> None:
    pair: _Pair = await connect(keyframe_all_layers=all_layers)
    assert await pair.frames("f", 5)
    marks = {
        spec.rid: len(pair.received.of(pair.publisher.layer(spec.rid).ssrc))
        for spec in SMALL_LAYERS
    }
    await pair.send_rtcp(_pli(pair.publisher.layer("h").ssrc))
    assert await wait_until(lambda: pair.publisher.layer("h").keyframes_sent >= 2)
    for spec in SMALL_LAYERS:
        assert await pair.frames(spec.rid, 10)
    assert pair.publisher.layer("h").keyframe_requests == 1
    got = {rid: await _keyframes_after(pair, rid, mark) for rid, mark in marks.items()}
    assert got == ({"q": 1, "h": 1, "f": 1} if all_layers else {"q": 0, "h": 1, "f": 0})


async def test_a_nack_is_answered_with_rtx_carrying_the_repaired_rid(connect: Connect) -> None:
    pair: _Pair = await connect()
    assert await pair.frames("h", 5)
    layer = pair.publisher.layer("h")
    lost = [p.sequence_number for p in pair.received.of(layer.ssrc)[2:4]]
    await aiortc_hooks.send_rtp(
        pair.video_receiver.transport, aiortc_hooks.nack_packet(1, layer.ssrc, lost)
    )
    assert await wait_until(lambda: len(pair.received.of(layer.rtx_ssrc)) == 2)
    originals = {p.sequence_number: p for p in pair.received.of(layer.ssrc)}
    for rtx in pair.received.of(layer.rtx_ssrc):
        assert rtx.extensions.repaired_rtp_stream_id == "h"
        assert rtx.extensions.rtp_stream_id is None
        number = int.from_bytes(rtx.payload[:2], "big")
        assert number in lost
        assert rtx.payload[2:] == originals[number].payload
    assert layer.nacks == 1
    assert layer.retransmitted == 2


async def _falls_silent(pair: _Pair, rid: str) -> bool:
    """Whether ``rid`` sends nothing for 0.3 s (after 0.1 s for what was on its way)."""
    await asyncio.sleep(0.1)
    ssrc = pair.publisher.layer(rid).ssrc
    count = len(pair.received.of(ssrc))
    await asyncio.sleep(0.3)
    return len(pair.received.of(ssrc)) == count


async def test_layers_stop_and_start_by_hand_and_by_remb(connect: Connect) -> None:
    pair: _Pair = await connect(follow_remb=True)
    publisher = pair.publisher
    assert await pair.frames("f", 3)
    f = publisher.layer("f")

    publisher.set_layer_active("f", False)
    assert await _falls_silent(pair, "f")
    assert publisher.sending_rids == ["q", "h"]
    keyframes = f.keyframes_sent
    publisher.set_layer_active("f", True)
    assert await wait_until(lambda: f.keyframes_sent == keyframes + 1)
    # a REMB with room for q and h only (every SSRC listed, one estimate per transport)
    ssrcs = [publisher.layer(spec.rid).ssrc for spec in SMALL_LAYERS]
    room = SMALL_LAYERS[0].bitrate + SMALL_LAYERS[1].bitrate + 1000
    await pair.send_rtcp(
        RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(room, ssrcs))
    )
    assert await wait_until(lambda: publisher.sending_rids == ["q", "h"])
    assert publisher.remb_bitrate == room
    assert await _falls_silent(pair, "f")
    await pair.send_rtcp(
        RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(5_000_000, ssrcs))
    )
    assert await wait_until(lambda: f.keyframes_sent == keyframes + 2)
    assert publisher.sending_rids == ["q", "h", "f"]


async def test_without_simulcast_in_the_answer_one_layer_goes_without_rid() -> None:
    publisher = SimulcastPublisher(SMALL_LAYERS, audio=False)
    pc = RTCPeerConnection(client_configuration())
    try:
        offer = await publisher.create_offer()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        received = _Received(_offered_extensions(offer))
        transport = next(t.receiver.transport for t in pc.getTransceivers())
        aiortc_hooks.filter_incoming_rtp(transport, received.keep)
        await publisher.accept_answer(str(pc.localDescription.sdp))  # not accepting simulcast
        assert not publisher.simulcast
        assert publisher.sending_rids == ["q"]
        ssrc = publisher.layer("q").ssrc
        assert await wait_until(lambda: sum(p.marker for p in received.of(ssrc)) >= 5)
        assert set(received.packets) == {ssrc}
        assert {p.extensions.rtp_stream_id for p in received.of(ssrc)} == {None}
    finally:
        await publisher.close()
        await pc.close()


async def test_a_looped_source_replays_its_frames_and_jumps_to_the_next_keyframe_on_request() -> (
    None
):
    keyframe, delta = b"\x00\x00\x00\x9d\x01\x2a", b"\x01\x00\x00"  # VP8 P bit: 0 key, 1 delta
    frames = [keyframe + b"0", delta + b"1", delta + b"2", keyframe + b"3", delta + b"4"]
    source = LoopedVp8Source.from_frames([frames, [keyframe + b"x" * 3000]])
    played = []
    for request in (False, False, True, False, False, True, False):
        (payloads,) = await source.frames([(0, request)])
        played.append(payloads[0][-1:])
    # a request moves on to the next keyframe (3), not back to the first; the loop goes on
    assert played == [b"0", b"1", b"3", b"4", b"0", b"3", b"4"]
    (large,) = await source.frames([(1, False)])
    assert [len(p) for p in large] == [1300, 1300, 4 + 3006 - 2 * 1296]  # aiortc's sizes
    assert [p[:4] for p in large] == [b"\x90\x80\x80\x00"] + [b"\x80\x80\x80\x00"] * 2
