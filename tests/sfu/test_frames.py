"""sfu.frames: real aiortc RTP (VP8, H.264, Opus) put back into frames that decode, in
order and out of order, with packets lost, late and twice, and across a new SSRC.

The packets are captured once per codec from a real publisher through a router (a tap on
its producers, as a recording has), then fed to assemblers in the orders each test needs."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import av
import pytest
import pytest_asyncio
from aiortc.rtp import RtpPacket

from sfu import Router
from sfu.frames import EncodedFrame, FrameAssembler
from sfu.producer import Producer
from testpeers import TestClients, wait_until
from tests.sfu.forwarding_loop import options

pytestmark = pytest.mark.asyncio(loop_scope="module")

CAPTURE_SECONDS = 1.5
KEYFRAME_EVERY = 0.4  # the capture asks for a keyframe this often, so losses can end


@dataclass
class _Capture:
    """A ``PacketTap`` keeping what a producer received."""

    packets: list[RtpPacket] = field(default_factory=list)
    waiting_keyframe: bool = False

    def on_packet(self, packet: RtpPacket, now: float) -> None:
        self.packets.append(packet)


@dataclass
class Captured:
    video_mime: str
    video: list[RtpPacket]
    audio: list[RtpPacket]


async def _capture(router: Router, clients: TestClients, codec: str) -> Captured:
    await clients.publish(router, codec=codec)
    assert await wait_until(lambda: len(router.producers) == 2)
    by_kind: dict[str, Producer] = {p.kind: p for p in router.producers}
    captures = {kind: _Capture() for kind in by_kind}
    for kind, producer in by_kind.items():
        producer.add_tap(captures[kind])
    end = time.monotonic() + CAPTURE_SECONDS
    while time.monotonic() < end:
        await asyncio.sleep(KEYFRAME_EVERY)
        await by_kind["video"].request_keyframe()
    for kind, producer in by_kind.items():
        producer.remove_tap(captures[kind])
    return Captured(
        by_kind["video"].mime_type, captures["video"].packets, captures["audio"].packets
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["vp8", "h264"])
async def captured(request: pytest.FixtureRequest) -> AsyncIterator[Captured]:
    router = Router(options(stats_interval_seconds=0))
    clients = TestClients()
    try:
        yield await _capture(router, clients, request.param)
    finally:
        await clients.close()
        await router.close()


def _assemble(
    mime: str, packets: list[RtpPacket], arrivals: Callable[[int], float] = lambda i: 0.0
) -> tuple[FrameAssembler, list[EncodedFrame]]:
    assembler = FrameAssembler(mime)
    frames: list[EncodedFrame] = []
    now = 0.0
    for index, packet in enumerate(packets):
        now = arrivals(index)
        frames += assembler.push(packet, now)
    frames += assembler.flush(now)
    return assembler, frames


def _decode(mime: str, frames: list[EncodedFrame]) -> list[av.VideoFrame]:
    """Decode the frames in the test (the SFU never does): every one must decode."""
    codec = av.CodecContext.create(mime.split("/")[1].lower(), "r")
    decoded: list[av.VideoFrame] = []
    for frame in frames:
        decoded += codec.decode(av.Packet(frame.data))  # raises on a broken frame
    return decoded


def _shuffled(packets: list[RtpPacket], window: int, seed: int) -> list[RtpPacket]:
    """Reordered within blocks of ``window`` packets, as a network may, after the first
    block (what comes before the first packet of a stream is not waited for)."""
    rng = random.Random(seed)
    out: list[RtpPacket] = packets[:window]
    for start in range(window, len(packets), window):
        block = packets[start : start + window]
        rng.shuffle(block)
        out += block
    return out


async def test_frames_in_order_decode_from_the_first_keyframe(captured: Captured) -> None:
    assembler, frames = _assemble(captured.video_mime, captured.video)
    assert frames[0].keyframe
    assert frames[0].size == (320, 240)
    assert assembler.packets_lost == 0
    assert assembler.frames_dropped == 0
    assert sum(f.keyframe for f in frames) >= 3  # the first and those asked for
    # one frame per marker, from the first keyframe on
    first = next(i for i, p in enumerate(captured.video) if p.timestamp == frames[0].timestamp)
    assert len(frames) == sum(p.marker for p in captured.video[first:])
    assert len(frames) >= 30
    timestamps = [f.timestamp for f in frames]
    assert len(set(timestamps)) == len(timestamps)
    decoded = _decode(captured.video_mime, frames)
    assert len(decoded) == len(frames)
    assert {(d.width, d.height) for d in decoded} == {(320, 240)}


async def test_reordered_packets_make_the_same_frames(captured: Captured) -> None:
    _, in_order = _assemble(captured.video_mime, captured.video)
    assembler, reordered = _assemble(captured.video_mime, _shuffled(captured.video, 8, seed=3))
    assert [f.data for f in reordered] == [f.data for f in in_order]
    assert assembler.packets_lost == 0


async def test_a_lost_packet_drops_its_frame_and_video_waits_for_a_keyframe(
    captured: Captured,
) -> None:
    packets = captured.video
    _, whole = _assemble(captured.video_mime, packets)
    keyframe_timestamps = {f.timestamp for f in whole if f.keyframe}
    starts = [i for i, p in enumerate(packets) if p.timestamp in keyframe_timestamps]
    starts = [i for i in starts if i == 0 or packets[i - 1].timestamp != packets[i].timestamp]
    # lose a packet halfway between two keyframes
    lost = (starts[1] + starts[2]) // 2
    kept = packets[:lost] + packets[lost + 1 :]
    # the packets after the gap keep arriving: the gap is given up on after max_delay
    assembler, frames = _assemble(captured.video_mime, kept, arrivals=lambda i: i * 0.01)
    assert assembler.packets_lost == 1
    assert assembler.frames_dropped >= 1
    lost_timestamp = packets[lost].timestamp
    assert lost_timestamp not in {f.timestamp for f in frames}
    after = [f for f in frames if f.timestamp - lost_timestamp & 0xFFFFFFFF < 0x80000000]
    assert after
    assert after[0].keyframe
    assert len(frames) < len(whole)
    assert len(_decode(captured.video_mime, frames)) == len(frames)


async def test_a_gap_is_waited_for_no_longer_than_max_delay(captured: Captured) -> None:
    packets = captured.video[:40]
    assembler = FrameAssembler(captured.video_mime, max_delay=0.5)
    out: list[EncodedFrame] = []
    gap = 20
    for packet in packets[:gap] + packets[gap + 1 :]:
        out += assembler.push(packet, 0.0)
    held = len(out)
    assert assembler.packets_lost == 0  # still waiting: no time has passed
    out += assembler.push(packets[gap], 0.1)  # the missing packet arrives late, in time
    assert assembler.packets_lost == 0
    assert len(out) > held
    assembler = FrameAssembler(captured.video_mime, max_delay=0.5)
    for packet in packets[:gap] + packets[gap + 1 :]:
        assembler.push(packet, 0.0)
    assembler.push(packets[-1], 0.6)  # a duplicate after the delay: the gap is given up
    assert assembler.packets_lost == 1
    assert assembler.packets_late == 1
    assembler.push(packets[gap], 0.7)  # the lost one, too late
    assert assembler.packets_late == 2


async def test_packets_held_past_max_packets_give_up_the_gap(captured: Captured) -> None:
    packets = captured.video
    assembler = FrameAssembler(captured.video_mime, max_packets=8)
    for packet in packets[:5] + packets[6:16]:
        assembler.push(packet, 0.0)
    assert assembler.packets_lost == 1


async def test_a_new_ssrc_starts_again_on_a_keyframe(captured: Captured) -> None:
    first, second = captured.video[: len(captured.video) // 2], captured.video
    renamed = [
        RtpPacket(
            payload_type=p.payload_type,
            marker=p.marker,
            sequence_number=(p.sequence_number + 30000) & 0xFFFF,
            timestamp=p.timestamp,
            ssrc=p.ssrc ^ 1,
            payload=p.payload,
        )
        for p in second
    ]
    assembler, frames = _assemble(captured.video_mime, first + renamed)
    assert assembler.packets_lost == 0
    new = [f for f in frames if f.ssrc == captured.video[0].ssrc ^ 1]
    assert new
    assert new[0].keyframe
    assert new[0].timestamp == frames[0].timestamp


async def test_audio_packets_are_frames_as_they_are(captured: Captured) -> None:
    audio = captured.audio
    assembler, frames = _assemble("audio/opus", _shuffled(audio, 4, seed=1))
    assert [f.data for f in frames] == [p.payload for p in audio]
    assert not any(f.keyframe for f in frames)
    # a lost audio packet costs that packet alone
    assembler, frames = _assemble(
        "audio/opus", audio[:10] + audio[11:], arrivals=lambda i: i * 0.02
    )
    assert assembler.packets_lost == 1
    assert len(frames) == len(audio) - 1
    decoder = av.CodecContext.create("opus", "r")
    assert all(decoder.decode(av.Packet(f.data)) for f in frames)


async def test_an_unknown_video_codec_is_refused() -> None:
    with pytest.raises(ValueError, match="no depayloader"):
        FrameAssembler("video/AV1")


async def test_a_marker_before_the_end_of_its_frame_leaves_it_whole(captured: Captured) -> None:
    """FFmpeg marks the packet of its parameter sets, then sends the picture with the same
    timestamp: one frame all the same."""
    _, whole = _assemble(captured.video_mime, captured.video)
    early: list[RtpPacket] = []
    for index, p in enumerate(captured.video):
        following = captured.video[index + 1] if index + 1 < len(captured.video) else None
        marker = p.marker or (following is not None and following.timestamp == p.timestamp)
        early.append(
            RtpPacket(
                payload_type=p.payload_type,
                marker=marker,  # every packet marked
                sequence_number=p.sequence_number,
                timestamp=p.timestamp,
                ssrc=p.ssrc,
                payload=p.payload,
            )
        )
    assert sum(p.marker for p in early) > sum(p.marker for p in captured.video)
    assembler, frames = _assemble(captured.video_mime, early)
    assert [f.data for f in frames] == [f.data for f in whole]
    assert [f.keyframe for f in frames] == [f.keyframe for f in whole]
    assert assembler.frames_dropped == 0
