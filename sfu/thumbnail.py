"""Thumbnails: now and then one keyframe of a broadcast's video, decoded into a small JPEG.

The SFU never decodes the stream itself. A ``Thumbnailer`` keeps the newest whole keyframe
of the video's middle or top simulcast layer; every ``interval`` seconds it takes the one
that came since its last thumbnail (or waits for the next), decodes that one frame with a
decoder made for it and dropped after, scales it to at most ``max_width`` pixels wide,
encodes a JPEG (in a thread, off the event loop) and emits ``ThumbnailTaken``. It asks the
publisher for no keyframe: one comes when a viewer joins or changes layers, or at the
encoder's own keyframe interval, so a thumbnail may be older than ``interval`` when nothing
brings one.

``codec_counts`` counts the decoders and encoders made here, so tests can tell that
forwarding and recording make none and thumbnails one decoder each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import av.error
from aiortc.rtp import RtpPacket
from av.video.frame import VideoFrame

from sfu.events import SfuEvent, ThumbnailTaken
from sfu.frames import FrameAssembler
from sfu.producer import Producer
from sfu.tasks import TaskSet
from sfu.track import PublishedTrack

logger = logging.getLogger(__name__)

MAX_WIDTH = 640
# A poster is loaded with every live card of the home page: past this, a JPEG is encoded
# again coarser.
MAX_JPEG_BYTES = 100_000
# MJPEG quantizer scales tried in turn (2 finest, 31 coarsest) until the JPEG fits.
_QUALITY_STEPS = (4, 8, 16, 31)
# The largest picture decoded (4K UHD): a keyframe that says it is larger (a publisher can
# send anything) fails to decode instead of taking gigabytes.
MAX_PIXELS = 3840 * 2160
_DECODERS: dict[str, Literal["vp8", "h264"]] = {"video/vp8": "vp8", "video/h264": "h264"}


class ThumbnailError(Exception):
    """A frame that could not be turned into a thumbnail (not a decodable keyframe)."""


class CodecCounts:
    """How many decoders and encoders thumbnails have made in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decoders_created = 0
        self.encoders_created = 0

    def decoder_created(self) -> None:
        with self._lock:
            self.decoders_created += 1

    def encoder_created(self) -> None:
        with self._lock:
            self.encoders_created += 1


codec_counts = CodecCounts()


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    width: int
    height: int


def can_decode(mime_type: str) -> bool:
    return mime_type.lower() in _DECODERS


def thumbnail_from_keyframe(
    mime_type: str, frame: bytes, *, max_width: int = MAX_WIDTH
) -> Thumbnail:
    """A JPEG of ``frame``, one whole encoded keyframe (VP8, or H.264 in Annex B with its
    parameter sets), at most ``max_width`` wide. Blocking (5 ms of CPU for 720p, 10 ms for
    1080p): run it in a thread. Raises ``ThumbnailError`` for a frame that does not decode."""
    decoder_name = _DECODERS.get(mime_type.lower())
    if decoder_name is None:
        raise ThumbnailError(f"no thumbnails of {mime_type}")
    picture = _decode(decoder_name, frame)
    width, height = _scaled_size(picture.width, picture.height, max_width)
    try:
        scaled = picture.reformat(
            width=width, height=height, format="yuvj420p", interpolation="AREA"
        )
        for quality in _QUALITY_STEPS:
            jpeg = _encode_jpeg(scaled, quality)
            if len(jpeg) <= MAX_JPEG_BYTES:
                break
    except av.error.FFmpegError as exc:  # a picture format the scaler or encoder refuses
        raise ThumbnailError(f"the picture does not make a JPEG: {exc}") from exc
    return Thumbnail(jpeg=jpeg, width=width, height=height)


def _decode(decoder_name: Literal["vp8", "h264"], frame: bytes) -> VideoFrame:
    """The picture of ``frame``, by a decoder made for it (freed with its last reference)."""
    decoder = av.CodecContext.create(decoder_name, "r")
    codec_counts.decoder_created()
    decoder.thread_count = 1  # one frame: threads would only cost their start
    decoder.options = {"max_pixels": str(MAX_PIXELS)}
    try:
        pictures = [*decoder.decode(av.Packet(frame)), *decoder.decode(None)]
    except av.error.FFmpegError as exc:
        raise ThumbnailError(f"the keyframe does not decode: {exc}") from exc
    picture = next((p for p in pictures if isinstance(p, VideoFrame)), None)
    if picture is None:
        raise ThumbnailError("the keyframe decodes to no picture")
    return picture


def _scaled_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """At most ``max_width`` wide, the same aspect ratio, even sizes (4:2:0 chroma)."""
    scaled_width = min(width, max_width)
    scaled_height = round(height * scaled_width / width)
    return max(2, scaled_width - scaled_width % 2), max(2, scaled_height - scaled_height % 2)


def _encode_jpeg(picture: VideoFrame, quality: int) -> bytes:
    encoder = av.CodecContext.create("mjpeg", "w")
    codec_counts.encoder_created()
    encoder.width = picture.width
    encoder.height = picture.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.options = {"qmin": str(quality), "qmax": str(quality)}
    packets = [*encoder.encode(picture), *encoder.encode(None)]
    return b"".join(bytes(p) for p in packets)


def thumbnail_layers(track: PublishedTrack, now: float) -> tuple[Producer, ...]:
    """The layers of ``track`` a thumbnail is taken from, at ``now`` (``time.monotonic()``):
    the middle and top ones of a simulcast track (the lowest is small for a poster), the
    one of any other; the lowest only while it alone sends (the publisher's bandwidth
    allows no more)."""
    layers = track.layers_at(now)
    if len(layers) == 1:
        return layers
    active = track.active_layers(now)
    upper = tuple(layer for layer in layers[1:] if layer in active)
    if upper:
        return upper
    return layers[:1] if layers[0] in active else layers[1:]


class Thumbnailer:
    """Takes a thumbnail of a router's video every ``interval`` seconds while it has
    one (``video()``: the publisher's video track, or None).

    It keeps the newest whole keyframe of the thumbnail layers (``KeyframeTap``: a
    comparison per packet, and the keyframes' packets put together); when a thumbnail is
    due it decodes the one that came since the last thumbnail, or waits for the next."""

    def __init__(
        self,
        *,
        router_id: str,
        interval: float,
        max_width: int,
        video: Callable[[], PublishedTrack | None],
        emit: Callable[[SfuEvent], None],
    ) -> None:
        self.router_id = router_id
        self.interval = interval
        self.max_width = max_width
        self._video = video
        self._emit = emit
        self._tasks = TaskSet()  # its loop, once started; a failure in it is logged
        self._taps: dict[Producer, KeyframeTap] = {}
        self._latest: tuple[str, bytes] | None = None  # codec and frame, since the last one
        self._arrived = asyncio.Event()

    def start(self) -> None:
        if not self._tasks:
            self.retarget()  # now: the publisher's first keyframe may be on its way
            self._tasks.spawn(self._run())

    async def close(self) -> None:
        await self._tasks.cancel()
        self._follow(())

    def retarget(self) -> None:
        """Tap the thumbnail layers of the video as it is now: the router calls it as soon
        as a new publisher takes over, before its first keyframes (the viewers' requests
        bring them) arrive."""
        track = self._video()
        if track is None or not can_decode(track.offered_layers[0].mime_type):
            self._follow(())
        else:
            self._follow(thumbnail_layers(track, time.monotonic()))

    async def _run(self) -> None:
        while True:
            self.retarget()
            keyframe, self._latest = self._latest, None
            if keyframe is None:
                # Waited for ``interval`` at most, then the layers (and the track) are
                # chosen again: the publisher may have stopped some, or been replaced.
                self._arrived.clear()
                # (asyncio.timeout, not wait_for: no task of its own while it waits)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._arrived.wait()
                continue
            await self._take(*keyframe)
            await asyncio.sleep(self.interval)

    def _follow(self, layers: tuple[Producer, ...]) -> None:
        """Tap ``layers`` (and no other) for keyframes."""
        for layer in [p for p in self._taps if p not in layers or p.closed]:
            layer.remove_tap(self._taps.pop(layer))
        for layer in layers:
            if layer not in self._taps and not layer.closed:
                self._taps[layer] = KeyframeTap(layer, self._keyframe)
                layer.add_tap(self._taps[layer])

    def _keyframe(self, mime_type: str, frame: bytes) -> None:
        self._latest = (mime_type, frame)
        self._arrived.set()

    async def _take(self, mime_type: str, frame: bytes) -> None:
        try:
            thumbnail = await asyncio.to_thread(
                thumbnail_from_keyframe, mime_type, frame, max_width=self.max_width
            )
        except ThumbnailError as exc:
            logger.info("no thumbnail: %s", exc, extra={"router_id": self.router_id})
            return
        self._emit(
            ThumbnailTaken(
                router_id=self.router_id,
                jpeg=thumbnail.jpeg,
                width=thumbnail.width,
                height=thumbnail.height,
            )
        )


class KeyframeTap:
    """A tap on one layer (``Producer.add_tap``) that hands each whole keyframe the layer
    receives to ``on_keyframe`` (codec, frame). Between keyframes it only compares the
    producer's keyframe count; from a keyframe's first packet to its last it puts the
    frame together (``sfu.frames``). It never asks for a keyframe (``waiting_keyframe``
    is false)."""

    waiting_keyframe = False

    def __init__(self, producer: Producer, on_keyframe: Callable[[str, bytes], None]) -> None:
        self._producer = producer
        self._on_keyframe = on_keyframe
        self._keyframes_seen = producer.keyframes_received
        self._assembler: FrameAssembler | None = None

    def on_packet(self, packet: RtpPacket, now: float) -> None:
        if self._assembler is None:
            if self._producer.keyframes_received == self._keyframes_seen:
                return
            self._assembler = FrameAssembler(self._producer.mime_type)
        assembler = self._assembler
        keyframe = next((f for f in assembler.push(packet, now) if f.keyframe), None)
        if keyframe is not None:
            self._on_keyframe(self._producer.mime_type, keyframe.data)
        elif not (assembler.waiting_keyframe and assembler.packets_lost):
            return  # the keyframe is under way
        # done with it (or it lost a packet): the next keyframe starts a new one
        self._assembler = None
        self._keyframes_seen = self._producer.keyframes_received
