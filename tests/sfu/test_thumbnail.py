"""Thumbnails (``sfu.thumbnail``): a real aiortc publisher's keyframes, one decoded now and
then into a JPEG; never a keyframe asked for, never a decoder otherwise."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import av
import pytest
from av.video.frame import VideoFrame

from sfu import RecordingSpec, RecordingStopped, Router, ThumbnailTaken, thumbnail
from sfu.thumbnail import (
    MAX_JPEG_BYTES,
    ThumbnailError,
    codec_counts,
    thumbnail_from_keyframe,
)
from testpeers import CodecSpy, TestClients, TestPublisher, pattern_planes, wait_until
from testpeers.simulcast import SMALL_LAYERS, SimulcastPublisher

INTERVAL = 0.3


def _decode_jpeg(jpeg: bytes) -> VideoFrame:
    decoder = av.CodecContext.create("mjpeg", "r")
    pictures = [*decoder.decode(av.Packet(jpeg)), *decoder.decode(None)]
    assert len(pictures) == 1
    picture = pictures[0]
    assert isinstance(picture, VideoFrame)
    return picture


def _keyframe(codec: Literal["libvpx", "libx264"], width: int, height: int) -> bytes:
    """One keyframe of the test pattern, encoded by FFmpeg (H.264 in Annex B)."""
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.bit_rate = 2_000_000
    luma, chroma = pattern_planes(width, height, 1)[0]
    picture = VideoFrame(width, height, "yuv420p")
    for plane, data in zip(picture.planes, (luma, chroma, chroma), strict=True):
        plane.update(data)
    packets = [*encoder.encode(picture), *encoder.encode(None)]
    assert packets[0].is_keyframe
    return bytes(packets[0])


@pytest.mark.parametrize(
    ("codec", "mime_type"), [("libvpx", "video/VP8"), ("libx264", "video/H264")]
)
def test_a_720p_keyframe_becomes_a_640_wide_jpeg_with_one_decoder(
    codec: Literal["libvpx", "libx264"], mime_type: str
) -> None:
    frame = _keyframe(codec, 1280, 720)
    decoders = codec_counts.decoders_created

    thumbnail = thumbnail_from_keyframe(mime_type, frame, max_width=640)

    assert codec_counts.decoders_created == decoders + 1
    assert (thumbnail.width, thumbnail.height) == (640, 360)
    assert thumbnail.jpeg.startswith(b"\xff\xd8")
    assert len(thumbnail.jpeg) <= MAX_JPEG_BYTES
    picture = _decode_jpeg(thumbnail.jpeg)
    assert (picture.width, picture.height) == (640, 360)


def test_a_smaller_picture_keeps_its_size() -> None:
    thumbnail = thumbnail_from_keyframe("video/VP8", _keyframe("libvpx", 320, 240))
    assert (thumbnail.width, thumbnail.height) == (320, 240)


def test_a_picture_larger_than_the_limit_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _keyframe("libvpx", 1280, 720)
    monkeypatch.setattr(thumbnail, "MAX_PIXELS", 1280 * 720 - 1)
    with pytest.raises(ThumbnailError):
        thumbnail_from_keyframe("video/VP8", frame)
    monkeypatch.setattr(thumbnail, "MAX_PIXELS", 1280 * 720)
    assert thumbnail_from_keyframe("video/VP8", frame).width == 640


def test_what_does_not_decode_is_a_thumbnail_error() -> None:
    with pytest.raises(ThumbnailError):
        thumbnail_from_keyframe("video/VP8", b"\x10\x02\x00\x9d\x01\x2a" + bytes(40))
    with pytest.raises(ThumbnailError):
        thumbnail_from_keyframe("video/VP9", b"anything")


@pytest.fixture
def thumbnails_router(new_router: Callable[..., Router]) -> Router:
    return new_router(thumbnail_interval_seconds=INTERVAL)


async def test_a_publisher_s_keyframes_become_thumbnails_and_none_is_asked_for(
    thumbnails_router: Router, clients: TestClients
) -> None:
    router = thumbnails_router
    taken: list[ThumbnailTaken] = []
    router.events.on(ThumbnailTaken, taken.append)
    decoders = codec_counts.decoders_created
    publisher = TestPublisher(width=1280, height=720, fps=5)
    clients.publishers.append(publisher)
    session = await router.publish(await publisher.create_offer())
    await publisher.accept_answer(session.answer_sdp)

    # the first keyframe of the broadcast
    assert await wait_until(lambda: len(taken) == 1, within=15)
    first = taken[0]
    assert first.router_id == router.id
    assert (first.width, first.height) == (640, 360)
    assert len(first.jpeg) <= MAX_JPEG_BYTES
    picture = _decode_jpeg(first.jpeg)
    assert (picture.width, picture.height) == (640, 360)

    # no keyframe comes, none is asked for: no thumbnail
    await asyncio.sleep(4 * INTERVAL)
    assert publisher.keyframe_requests == []
    assert len(taken) == 1

    # a viewer joining brings one: the next thumbnail
    await clients.subscribe(router, decode=False)
    assert await wait_until(lambda: len(taken) == 2, within=10)
    assert len(publisher.keyframe_requests) >= 1
    assert codec_counts.decoders_created - decoders == len(taken)


async def test_a_simulcast_thumbnail_is_of_the_middle_or_top_layer(
    thumbnails_router: Router,
) -> None:
    router = thumbnails_router
    taken: list[ThumbnailTaken] = []
    router.events.on(ThumbnailTaken, taken.append)
    publisher = SimulcastPublisher(SMALL_LAYERS, fps=15)
    try:
        session = await router.publish(await publisher.create_offer())
        await publisher.accept_answer(session.answer_sdp)
        assert await wait_until(lambda: len(taken) >= 1, within=15)
        # the lowest layer's keyframes bring none
        for _ in range(3):
            publisher.request_keyframe("q")
            await asyncio.sleep(INTERVAL)
        publisher.request_keyframe("h")
        assert await wait_until(lambda: len(taken) >= 2, within=10)
    finally:
        await publisher.close()
    sizes = {(s.width, s.height) for s in SMALL_LAYERS[1:]}
    assert {(t.width, t.height) for t in taken} <= sizes


async def test_forwarding_makes_no_decoder_and_a_router_without_thumbnails_takes_none(
    router: Router, clients: TestClients
) -> None:
    taken: list[ThumbnailTaken] = []
    router.events.on(ThumbnailTaken, taken.append)
    decoders, encoders = codec_counts.decoders_created, codec_counts.encoders_created
    await clients.publish(router)
    viewer, _ = await clients.subscribe(router, decode=False)
    assert await viewer.wait_for_frames(video=30, within=10)
    assert (codec_counts.decoders_created, codec_counts.encoders_created) == (decoders, encoders)
    assert taken == []


async def test_thumbnails_follow_a_publisher_that_takes_over(
    thumbnails_router: Router, clients: TestClients
) -> None:
    router = thumbnails_router
    taken: list[ThumbnailTaken] = []
    router.events.on(ThumbnailTaken, taken.append)
    first, _ = await clients.publish(router)
    assert await wait_until(lambda: len(taken) == 1, within=15)
    viewer, _ = await clients.subscribe(router, decode=False)
    assert await viewer.wait_for_frames(video=10, within=10)
    await asyncio.sleep(2 * INTERVAL)
    before = len(taken)

    _, session = await clients.publish(router)
    assert await wait_until(lambda: router.publisher is session, within=15)
    await first.close()
    # the viewer moves to the new publisher's track, whose keyframe is the next thumbnail
    assert await wait_until(lambda: len(taken) > before, within=15)
    video = next(p for p in session.producers if p.kind == "video")
    assert video.keyframes_received >= 1


async def test_while_recording_only_thumbnails_decode_one_frame_each(
    thumbnails_router: Router, clients: TestClients, tmp_path: Path
) -> None:
    router = thumbnails_router
    taken: list[ThumbnailTaken] = []
    stopped: list[RecordingStopped] = []
    router.events.on(ThumbnailTaken, taken.append)
    router.events.on(RecordingStopped, stopped.append)
    decoders = codec_counts.decoders_created
    spy = CodecSpy()
    with spy.installed():
        await clients.publish(router)
        router.start_recording(RecordingSpec(recording_id="with-thumbnails", directory=tmp_path))
        assert await wait_until(lambda: len(taken) >= 1, within=15)
        await asyncio.sleep(1.0)
        router.stop_recording()
        assert await wait_until(lambda: bool(stopped), within=10)
    assert stopped[0].reason == "stopped"
    assert stopped[0].video_frames > 0
    assert spy.decoders == []  # neither forwarding nor recording decoded anything
    assert codec_counts.decoders_created - decoders == len(taken)


async def test_an_h264_publisher_s_keyframe_becomes_a_thumbnail(
    thumbnails_router: Router, clients: TestClients
) -> None:
    taken: list[ThumbnailTaken] = []
    thumbnails_router.events.on(ThumbnailTaken, taken.append)
    await clients.publish(thumbnails_router, codec="h264")
    assert await wait_until(lambda: len(taken) == 1, within=15)
    picture = _decode_jpeg(taken[0].jpeg)
    assert (picture.width, picture.height) == (320, 240)
