"""aiortc client peers for tests, the demo and benchmarks.

``TestPublisher`` sends a generated test pattern and a tone; ``TestViewer``
receives, decodes (or, with ``decode=False``, only counts packets) and records
what it got. ``publish``/``subscribe`` connect them to a ``Router`` in-process.
"""

from __future__ import annotations

import array
import asyncio
import fractions
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtpPacket,
)
from av import AudioFrame, VideoFrame
from av.frame import Frame

from sfu import aiortc_adapter
from sfu.publisher import PublisherPeer
from sfu.router import Router
from sfu.viewer import ViewerPeer
from testpeers import aiortc_hooks

VIDEO_CLOCK_RATE = 90000
AUDIO_SAMPLE_RATE = 48000
AUDIO_PTIME = 0.02
_BARS = (235, 210, 170, 145, 106, 81, 41, 16)
_BAR_ROWS = 2 / 3  # the bars fill the top; a box moves across the bottom


def client_configuration() -> RTCConfiguration:
    """Host candidates only: nothing may leave the machine."""
    return RTCConfiguration(iceServers=[])


class _Pacer:
    """Paces a generated track in real time, like aiortc's own test tracks."""

    def __init__(self, rate: float) -> None:
        self._period = 1 / rate
        self._start: float | None = None
        self.index = 0

    async def next(self) -> int:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self.index += 1
            delay = self._start + self.index * self._period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return self.index


def _pattern_luma(width: int, height: int, box_x: int, noise_seed: int | None = None) -> bytes:
    """Bars on top; below, a moving box and (with a seed) a strip of noise that
    keeps the encoder at its bitrate, so frames span several packets."""
    bar_width = max(1, width // len(_BARS))
    row = bytes(_BARS[min(x // bar_width, len(_BARS) - 1)] for x in range(width))
    bar_rows = int(height * _BAR_ROWS)
    plane = bytearray(row * bar_rows + bytes([16]) * (width * (height - bar_rows)))
    box = min(width // 8, height - bar_rows)
    top = bar_rows + (height - bar_rows - box) // 2
    for y in range(top, top + box):
        start = y * width + box_x
        plane[start : start + box] = bytes([235]) * min(box, width - box_x)
    if noise_seed is not None:
        noise_rows = (height - bar_rows - box) // 2
        plane[width * (height - noise_rows) :] = random.Random(noise_seed).randbytes(
            width * noise_rows
        )
    return bytes(plane)


def matches_pattern(frame: VideoFrame, tolerance: int = 24) -> bool:
    """True if a decoded frame shows the test pattern's bars (not grey, not
    garbage): sampled luma within ``tolerance`` of the generated values."""
    plane = frame.planes[0]
    data = bytes(plane)
    width, height = frame.width, frame.height
    expected = _pattern_luma(width, height, 0)
    bar_rows = int(height * _BAR_ROWS)
    errors = []
    for y in range(4, bar_rows - 4, 8):
        for x in range(4, width - 4, 8):
            errors.append(abs(data[y * plane.line_size + x] - expected[y * width + x]))
    return bool(errors) and sum(errors) / len(errors) < tolerance


def pattern_planes(width: int, height: int, steps: int) -> list[tuple[bytes, bytes]]:
    """The test pattern's ``steps`` pictures (the box crossing once) as (luma, chroma)
    planes, yuv420p: chroma is grey, the same for U and V."""
    chroma = bytes([128]) * ((width // 2) * (height // 2))
    return [
        (_pattern_luma(width, height, (i * (width - width // 8)) // steps, i), chroma)
        for i in range(steps)
    ]


class PatternVideoTrack(MediaStreamTrack):
    """Colour bars (luma steps) with a box moving across the bottom."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._planes = pattern_planes(width, height, fps)
        self._pacer = _Pacer(fps)

    async def recv(self) -> Frame:
        index = await self._pacer.next()
        luma, chroma = self._planes[index % len(self._planes)]
        frame = VideoFrame(self.width, self.height, "yuv420p")
        frame.planes[0].update(luma)
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frame.pts = index * (VIDEO_CLOCK_RATE // self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A 440 Hz sine tone, mono, 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        samples = int(AUDIO_SAMPLE_RATE * AUDIO_PTIME)
        second = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * frequency * n / AUDIO_SAMPLE_RATE))
                for n in range(AUDIO_SAMPLE_RATE)
            ),
        ).tobytes()
        self._chunks = [second[i * samples * 2 : (i + 1) * samples * 2] for i in range(50)]
        self._samples = samples
        self._pacer = _Pacer(1 / AUDIO_PTIME)

    async def recv(self) -> Frame:
        index = await self._pacer.next()
        frame = AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(self._chunks[index % len(self._chunks)])
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = index * self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
        return frame


def video_capability(codec: str) -> RTCRtpCodecCapability:
    """aiortc's capability for ``"vp8"`` or ``"h264"`` (constrained baseline,
    packetization-mode=1)."""
    for capability in RTCRtpSender.getCapabilities("video").codecs:
        if codec == "vp8" and capability.mimeType == "video/VP8":
            return capability
        if (
            codec == "h264"
            and capability.mimeType == "video/H264"
            and capability.parameters.get("profile-level-id") == "42e01f"
        ):
            return capability
    raise ValueError(f"unknown video codec {codec!r}")


class TestPublisher:
    """An aiortc broadcaster: test pattern and tone, sendonly."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        codec: str = "vp8",
        width: int = 320,
        height: int = 240,
        fps: int = 30,
        min_keyframe_interval: float = 0.0,
        rtx: bool = False,
        follow_remb: bool = False,
    ) -> None:
        self.pc = RTCPeerConnection(client_configuration())
        # with ``rtx``, retransmissions go on their own SSRC, as a browser sends them
        self._rtx = rtx
        self.codec = codec
        self.video = PatternVideoTrack(width, height, fps)
        self.audio = ToneAudioTrack()
        self.keyframe_requests: list[float] = []  # when each PLI/FIR arrived
        self.keyframe_requests_ignored = 0
        # like a browser: libwebrtc ignores a request within 300 ms of the last it honoured
        self._min_keyframe_interval = min_keyframe_interval
        # The bitrate estimate (REMB) is left unheard unless ``follow_remb``: aiortc's
        # encoder restarts, with a keyframe, whenever it moves by 10 %, which a browser's
        # does not, and the SFU's (the publish ceiling) would take it from its default
        # 500 kbit/s to its 1.5 Mbit/s maximum, three times the packets every test handles.
        self._follow_remb = follow_remb
        self._last_honoured = -math.inf
        self._capability = video_capability(codec)
        self.media_held = False  # see hold_media

    async def create_offer(self) -> str:
        self.pc.addTransceiver(self.audio, direction="sendonly")
        video = self.pc.addTransceiver(self.video, direction="sendonly")
        rtx = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == "rtx"]
        video.setCodecPreferences([self._capability, *(rtx if self._rtx else [])])
        aiortc_adapter.intercept_sender_rtcp(video.sender, self._on_feedback)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        for transport in {sender.transport for sender in self.pc.getSenders()}:
            aiortc_hooks.hold_outgoing_media(transport, lambda: self.media_held)

    def hold_media(self, held: bool) -> None:
        """Stop sending RTP and RTCP (``held``), or send again; the connection stays up:
        a stalled network or a killed encoder, before ICE consent notices."""
        self.media_held = held

    async def close(self) -> None:
        await self.pc.close()

    async def _on_feedback(self, packet: AnyRtcpPacket) -> bool:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            now = time.monotonic()
            self.keyframe_requests.append(now)
            if now - self._last_honoured < self._min_keyframe_interval:
                self.keyframe_requests_ignored += 1
                return True  # consumed: no keyframe
            self._last_honoured = now
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            return not self._follow_remb
        return False  # aiortc still handles it and encodes a keyframe


@dataclass
class StreamRecord:
    """What one viewer received on one kind of track."""

    packets: int = 0
    frames: int = 0
    first_frame_at: float | None = None
    first_frame_matches_pattern: bool | None = None
    frame_size: tuple[int, int] | None = None  # of the last decoded video frame
    first_payload: bytes | None = None
    sequence_numbers: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    ssrc: int | None = None


class TestViewer:
    """An aiortc viewer, recvonly.

    With ``decode=True`` it decodes like a browser and counts decoded frames;
    with ``decode=False`` it only counts packets (and, for video, frames as
    marker bits), which costs little CPU. ``record_rtp=True`` keeps every video
    sequence number and timestamp as received (after RTX repair).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, *, decode: bool = True, record_rtp: bool = False) -> None:
        self.pc = RTCPeerConnection(client_configuration())
        self.decode = decode
        self.record_rtp = record_rtp
        self.audio = StreamRecord()
        self.video = StreamRecord()
        self.created_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._video_receiver: RTCRtpReceiver | None = None
        # called with every video packet received (after RTX repair)
        self.on_video_packet: Callable[[RtpPacket], None] | None = None

    async def create_offer(self) -> str:
        """A WHEP-style recvonly offer for audio and video."""
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        self._observe()

    async def answer(self, offer_sdp: str) -> str:
        """Answer a server's offer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        self._observe()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    def drop_incoming(self, ratio: float, seed: int = 1) -> None:
        """Emulate a lossy downlink: drop ``ratio`` of incoming RTP packets."""
        rng = random.Random(seed)
        transports = {t.receiver.transport for t in self.pc.getTransceivers()}
        for transport in transports:
            aiortc_hooks.filter_incoming_rtp(transport, lambda _: rng.random() >= ratio)

    async def send_pli(self) -> bool:
        """Ask the SFU for a keyframe, as a browser does after decode errors."""
        if self._video_receiver is None or self.video.ssrc is None:
            return False
        await aiortc_adapter.send_pli(self._video_receiver, self.video.ssrc)
        return True

    async def send_nack(self, lost: list[int]) -> bool:
        """Ask the SFU to resend the video packets ``lost`` (outgoing sequence numbers), as
        a browser does for packets it missed, or as a hostile viewer does for any."""
        if self._video_receiver is None or self.video.ssrc is None:
            return False
        await aiortc_hooks.send_nack(self._video_receiver, self.video.ssrc, lost)
        return True

    async def wait_for_frames(self, video: int, audio: int = 0, within: float = 10.0) -> bool:
        """Wait until this many frames arrived; False after ``within`` seconds."""
        return await wait_until(
            lambda: self.video.frames >= video and self.audio.frames >= audio, within
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.pc.close()

    def _observe(self) -> None:
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            record = self.video if transceiver.kind == "video" else self.audio
            if transceiver.kind == "video":
                self._video_receiver = receiver
            aiortc_adapter.tap_receiver(receiver, self._packet_counter(record), decode=self.decode)
            if self.decode and receiver.track is not None:
                self._tasks.append(asyncio.ensure_future(self._consume(receiver.track, record)))

    def _packet_counter(self, record: StreamRecord) -> aiortc_adapter.PacketHandler:
        count_frames = not self.decode and record is self.video

        async def on_packet(packet: RtpPacket) -> None:
            if record.first_payload is None:
                record.first_payload = packet.payload
            record.packets += 1
            record.ssrc = packet.ssrc
            if record is self.video and self.on_video_packet is not None:
                self.on_video_packet(packet)
            if self.record_rtp and record is self.video:
                record.sequence_numbers.append(packet.sequence_number)
                record.timestamps.append(packet.timestamp)
            if count_frames and packet.marker:
                if record.first_frame_at is None:
                    record.first_frame_at = time.monotonic()
                record.frames += 1
            elif record is self.audio and not self.decode:
                record.frames += 1

        return on_packet

    async def _consume(self, track: MediaStreamTrack, record: StreamRecord) -> None:
        try:
            while True:
                frame = await track.recv()
                if record.first_frame_at is None:
                    record.first_frame_at = time.monotonic()
                    if isinstance(frame, VideoFrame):
                        record.first_frame_matches_pattern = matches_pattern(frame)
                if isinstance(frame, VideoFrame):
                    record.frame_size = (frame.width, frame.height)
                record.frames += 1
        except MediaStreamError:
            return


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> bool:
    """Poll ``condition`` until it holds; False after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def wait_until_awaited(
    condition: Callable[[], Awaitable[bool]], within: float = 10.0, interval: float = 0.1
) -> bool:
    """``wait_until`` for a condition that must be awaited (a query, a request)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


class TestClients:
    """Creates client peers connected to routers in-process, and closes them all."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.publishers: list[TestPublisher] = []
        self.viewers: list[TestViewer] = []

    async def publish(
        self,
        router: Router,
        *,
        codec: str = "vp8",
        fps: int = 30,
        min_keyframe_interval: float = 0.0,
    ) -> tuple[TestPublisher, PublisherPeer]:
        """Connect a new ``TestPublisher`` to ``router``."""
        publisher = TestPublisher(codec=codec, fps=fps, min_keyframe_interval=min_keyframe_interval)
        self.publishers.append(publisher)
        session = await router.publish(await publisher.create_offer())
        await publisher.accept_answer(session.answer_sdp)
        return publisher, session

    async def subscribe(
        self,
        router: Router,
        *,
        server_offer: bool = False,
        decode: bool = True,
        record_rtp: bool = False,
    ) -> tuple[TestViewer, ViewerPeer]:
        """Connect a new ``TestViewer`` to ``router``, with the viewer's offer
        (WHEP-style) or, with ``server_offer=True``, with the server's."""
        viewer = TestViewer(decode=decode, record_rtp=record_rtp)
        self.viewers.append(viewer)
        if server_offer:
            session = await router.subscribe()
            assert session.offer_sdp is not None
            await session.accept_answer(await viewer.answer(session.offer_sdp))
        else:
            session = await router.subscribe(await viewer.create_offer())
            assert session.answer_sdp is not None
            await viewer.accept_answer(session.answer_sdp)
        return viewer, session

    async def close(self) -> None:
        for viewer in self.viewers:
            await viewer.close()
        for publisher in self.publishers:
            await publisher.close()
        self.viewers.clear()
        self.publishers.clear()


@dataclass
class CodecSpy:
    """Every decoder and encoder aiortc created: (MIME type, owner), where the
    owner is the decoder thread or the sending ``RTCRtpSender``."""

    decoders: list[tuple[str, object]] = field(default_factory=list)
    encoders: list[tuple[str, object]] = field(default_factory=list)

    @contextmanager
    def installed(self) -> Iterator[CodecSpy]:
        def on_decoder(codec: RTCRtpCodecParameters, thread: object) -> None:
            self.decoders.append((codec.mimeType, thread))

        def on_encoder(codec: RTCRtpCodecParameters, sender: object) -> None:
            self.encoders.append((codec.mimeType, sender))

        with aiortc_hooks.spy_codec_factories(on_decoder, on_encoder):
            yield self


class DecodeErrorCounter(logging.Handler):
    """Counts aiortc's "failed to decode" warnings while installed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decode" in record.getMessage():
            self.errors += 1

    @contextmanager
    def installed(self) -> Iterator[DecodeErrorCounter]:
        aiortc_logger = logging.getLogger("aiortc.rtcrtpreceiver")
        aiortc_logger.addHandler(self)
        try:
            yield self
        finally:
            aiortc_logger.removeHandler(self)
