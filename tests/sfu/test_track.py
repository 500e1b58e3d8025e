"""PublishedTrack: a track's simulcast layers, ordered lowest quality first from what
arrives; Producer's measured bitrate and activity."""

import fractions
import struct
import time
from typing import cast

import av
import pytest
from aiortc import RTCRtpCodecParameters, RTCRtpReceiver
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from sfu import aiortc_adapter
from sfu.keyframe import h264_keyframe_size, vp8_keyframe_size
from sfu.producer import BITRATE_BUCKET_SECONDS, Producer
from sfu.track import PublishedTrack

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def _vp8_frame(width: int, height: int, *, keyframe: bool) -> list[bytes]:
    encoder = Vp8Encoder()
    frame = av.VideoFrame(width=width, height=height, format="yuv420p")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    payloads, _ = encoder.encode(frame, force_keyframe=keyframe)
    if not keyframe:  # the encoder's first frame is a keyframe: take its second
        frame.pts = 3000
        payloads, _ = encoder.encode(frame)
    return payloads


class _Layer:
    """A producer fed by hand, as sfu.pipe's edge feeds one."""

    def __init__(self, rid: str) -> None:
        self.source = aiortc_adapter.ReceiverStandIn(lambda ssrc: None)
        self.producer = Producer(
            router_id="r",
            publisher_id="p",
            kind="video",
            codec=VP8,
            receiver=cast(RTCRtpReceiver, self.source),
            cache_size=64,
            keyframe_request_interval=1.0,
            emit=lambda event: None,
            rid=rid,
        )
        self.sequence_number = 0

    async def send(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.sequence_number += 1
            await self.source.receive(
                RtpPacket(
                    payload_type=96,
                    sequence_number=self.sequence_number,
                    ssrc=1,
                    payload=payload,
                    marker=payload is payloads[-1],
                )
            )


@pytest.mark.parametrize(("width", "height"), [(320, 180), (640, 360), (1280, 720), (176, 144)])
def test_h264_keyframe_size_is_read_from_its_sps(width: int, height: int) -> None:
    encoder = H264Encoder()
    frame = av.VideoFrame(width=width, height=height, format="yuv420p")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    payloads, _ = encoder.encode(frame, force_keyframe=True)
    # aiortc sends SPS and PPS in a STAP-A before the IDR slice, as browsers do
    assert h264_keyframe_size(payloads[0]) == (width, height)
    assert [h264_keyframe_size(p) for p in payloads[1:]] == [None] * (len(payloads) - 1)
    sps = payloads[0][3 : 3 + struct.unpack_from("!H", payloads[0], 1)[0]]
    assert h264_keyframe_size(sps) == (width, height)  # alone
    assert h264_keyframe_size(sps[:6]) is None  # cut short


def test_vp8_keyframe_size_is_read_from_a_real_keyframe_only() -> None:
    key = _vp8_frame(320, 180, keyframe=True)
    assert vp8_keyframe_size(key[0]) == (320, 180)
    assert [vp8_keyframe_size(p) for p in key[1:]] == [None] * (len(key) - 1)
    assert vp8_keyframe_size(_vp8_frame(320, 180, keyframe=False)[0]) is None
    assert vp8_keyframe_size(key[0][:8]) is None  # cut before the size


async def test_layers_rank_by_keyframe_size_whatever_the_offer_order() -> None:
    # offered top first, as a page listing its encodings f, h, q would
    full, half, quarter = _Layer("f"), _Layer("h"), _Layer("q")
    track = PublishedTrack("video", [full.producer, half.producer, quarter.producer])
    await quarter.send(_vp8_frame(320, 180, keyframe=True))
    await half.send(_vp8_frame(640, 360, keyframe=True))
    # the top layer has not started (its bandwidth is not there yet): it ranks on top
    assert track.layers == (quarter.producer, half.producer, full.producer)
    await full.send(_vp8_frame(1280, 720, keyframe=True))
    assert track.layers == (quarter.producer, half.producer, full.producer)
    assert full.producer.frame_size == (1280, 720)
    now = time.monotonic()
    assert track.active_layers(now) == track.layers
    assert track.layer_index(half.producer, now) == 1
    assert track.nearest_layer(5, now) is full.producer
    assert track.active_layers(now + 5) == ()


async def test_layers_without_a_size_rank_by_bitrate_then_offer_order() -> None:
    first, second, third = _Layer("a"), _Layer("b"), _Layer("c")
    track = PublishedTrack("video", [first.producer, second.producer, third.producer])
    assert track.layers == (first.producer, second.producer, third.producer)
    inter = _vp8_frame(320, 180, keyframe=False)
    await first.send(inter * 10)
    await third.send(inter)
    assert track.layers == (second.producer, third.producer, first.producer)


async def test_bitrate_covers_about_the_last_second() -> None:
    layer = _Layer("q")
    producer = layer.producer
    assert producer.bitrate(time.monotonic()) == 0.0
    assert not producer.active(time.monotonic())
    payloads = _vp8_frame(320, 180, keyframe=False)
    await layer.send(payloads)
    sent = sum(len(p) for p in payloads)
    now = time.monotonic()
    assert producer.active(now)
    # one bucket so far, counted over a bucket's length at least
    assert producer.bitrate(now) == pytest.approx(sent * 8 / BITRATE_BUCKET_SECONDS)
    # a second later nothing came: none
    assert producer.bitrate(now + 1.5) == 0.0


def test_a_track_without_simulcast_is_its_one_layer() -> None:
    producer = _Layer("q").producer
    track = PublishedTrack.single(producer)
    assert track.layers == (producer,)
    assert not track.simulcast


async def test_a_packet_received_again_is_not_counted_or_forwarded_again() -> None:
    """Chromium probes its bandwidth by sending recent packets again on the lowest
    layer's RTX stream (measured: 548 such packets beside 139 new ones in 8 s), which
    aiortc unwraps into copies of packets already received."""
    layer = _Layer("q")
    keyframe = _vp8_frame(320, 180, keyframe=True)
    await layer.send(keyframe)
    sent = layer.sequence_number
    layer.sequence_number -= len(keyframe)
    await layer.send(keyframe)  # the same packets, the same sequence numbers
    producer = layer.producer
    assert producer.packets_received == sent
    assert producer.duplicates_received == sent
    assert producer.keyframes_received == 1
