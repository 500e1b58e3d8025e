"""A viewer's down track switching between layers of a video (``DownTrack.switch_layer``),
pausing and probing, with a real aiortc viewer decoding what it gets.

The second layer here is a ``Producer`` fed by a ``ReceiverStandIn`` with real VP8 encoded
at another resolution, so the down track's mechanics are tested without a simulcast
publisher; ``tests/sfu/test_viewer_quality.py`` drives the whole choice with one."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket
from av import VideoFrame

from sfu import Router
from sfu.aiortc_adapter import ReceiverStandIn
from sfu.downtrack import DownTrack
from sfu.producer import Producer
from testpeers import DecodeErrorCounter, TestClients, wait_until

FPS = 30


class Vp8Layer:
    """Real VP8 at ``width`` x ``height``, sent as RTP into a stand-in receiver at 30 fps,
    a keyframe on request (PLI)."""

    def __init__(self, width: int, height: int, ssrc: int) -> None:
        self.width = width
        self.height = height
        self.ssrc = ssrc
        self.keyframe_wanted = True
        self.plis = 0
        self.stand_in = ReceiverStandIn(self._on_pli)
        self._encoder = Vp8Encoder()
        self._sequence_number = 1000

    def _on_pli(self, ssrc: int) -> None:
        self.plis += 1
        self.keyframe_wanted = True

    async def run(self) -> None:
        frame_index = 0
        while True:
            frame = VideoFrame(self.width, self.height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(frame_index * 3) % 256]) * plane.buffer_size)
            frame.pts = frame_index * 3000
            frame.time_base = fractions.Fraction(1, 90000)
            payloads, timestamp = self._encoder.encode(frame, force_keyframe=self.keyframe_wanted)
            self.keyframe_wanted = False
            for index, payload in enumerate(payloads):
                packet = RtpPacket(
                    payload_type=96,
                    marker=index == len(payloads) - 1,
                    sequence_number=self._sequence_number,
                    timestamp=timestamp,
                    ssrc=self.ssrc,
                    payload=payload,
                )
                self._sequence_number = (self._sequence_number + 1) & 0xFFFF
                await self.stand_in.receive(packet)
            frame_index += 1
            await asyncio.sleep(1 / FPS)


@pytest.fixture
async def second_layer() -> AsyncIterator[Callable[[Router, Producer], Producer]]:
    """Makes a producer beside ``like`` (same codec) fed with 640x360 VP8."""
    tasks: list[asyncio.Task[None]] = []
    producers: list[Producer] = []

    def make(router: Router, like: Producer) -> Producer:
        layer = Vp8Layer(640, 360, ssrc=0x5EC0)
        producer = Producer(
            router_id=router.id,
            publisher_id="second-layer",
            kind="video",
            codec=like.codec,
            receiver=layer.stand_in,  # type: ignore[arg-type]
            cache_size=512,
            keyframe_request_interval=1.0,
            emit=router.events.emit,
        )
        producers.append(producer)
        tasks.append(asyncio.ensure_future(layer.run()))
        return producer

    yield make
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for producer in producers:
        producer.close("closed")


def _video(session_tracks: tuple[DownTrack, ...]) -> DownTrack:
    return next(t for t in session_tracks if t.kind == "video")


def _steps(values: list[int], modulus: int) -> list[int]:
    return [(b - a) % modulus for a, b in itertools.pairwise(values)]


async def test_switching_layers_keeps_one_continuous_stream_that_the_viewer_decodes(
    new_router: Callable[..., Router],
    clients: TestClients,
    second_layer: Callable[[Router, Producer], Producer],
) -> None:
    router = new_router()
    await clients.publish(router)
    viewer, session = await clients.subscribe(router, record_rtp=True)
    session.quality.close()  # the down track alone is under test: no layer choice
    with DecodeErrorCounter().installed() as decode_errors:
        assert await viewer.wait_for_frames(video=10)
        video = _video(session.down_tracks)
        first = video.producer
        other = second_layer(router, first)
        await asyncio.sleep(0.2)  # the second layer runs

        await video.switch_layer(other)
        # make-before-break: the current layer goes on until the other's keyframe
        assert video.switching_to is other or video.producer is other
        assert await wait_until(lambda: video.producer is other, within=3)
        frames = viewer.video.frames
        assert await viewer.wait_for_frames(video=frames + 15, within=5)

        await video.switch_layer(first)
        assert await wait_until(lambda: video.producer is first, within=3)
        frames = viewer.video.frames
        assert await viewer.wait_for_frames(video=frames + 15, within=5)

    assert video.layer_switches == 2
    assert decode_errors.errors == 0
    sequence_steps = _steps(viewer.video.sequence_numbers, 1 << 16)
    assert set(sequence_steps) == {1}  # no gap, no jump, no repeat across both switches
    timestamp_steps = _steps(viewer.video.timestamps, 1 << 32)
    # never backwards, never a jump: at most a few frames' time between packets
    assert max(timestamp_steps) < 90000 // 2


async def test_a_paused_track_sends_nothing_and_resumes_on_a_keyframe(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    router = new_router()
    await clients.publish(router)
    viewer, session = await clients.subscribe(router, record_rtp=True)
    session.quality.close()  # the down track alone is under test: no layer choice
    assert await viewer.wait_for_frames(video=5, audio=5)
    video = _video(session.down_tracks)
    layer = video.producer

    video.pause()
    assert video.paused
    assert video.group is None
    assert not video.forwarded_natively
    await asyncio.sleep(0.2)  # what was on its way arrives
    packets, audio = viewer.video.packets, viewer.audio.packets
    await asyncio.sleep(0.5)
    assert viewer.video.packets == packets
    assert viewer.audio.packets > audio  # the audio goes on

    frames = viewer.video.frames
    await video.switch_layer(layer)
    assert not video.paused
    assert await viewer.wait_for_frames(video=frames + 10, within=5)
    assert set(_steps(viewer.video.sequence_numbers, 1 << 16)) == {1}


async def test_a_probe_sends_padding_the_viewer_drops_on_the_retransmission_stream(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    router = new_router()
    await clients.publish(router)
    viewer, session = await clients.subscribe(router, record_rtp=True)
    session.quality.close()  # the down track alone is under test: no layer choice
    with DecodeErrorCounter().installed() as decode_errors:
        assert await viewer.wait_for_frames(video=5)
        video = _video(session.down_tracks)
        sent = video.send_probe(20_000)
        assert sent >= 20_000
        assert video.probe_packets >= 20_000 // 300
        video.pause()  # a paused track is probed too (toward the lowest layer)
        assert video.send_probe(5_000) >= 5_000
        await video.switch_layer(video.producer)
        frames = viewer.video.frames
        assert await viewer.wait_for_frames(video=frames + 10)
    assert decode_errors.errors == 0
    # padding is no media: nothing of it enters the viewer's stream
    assert set(_steps(viewer.video.sequence_numbers, 1 << 16)) == {1}
