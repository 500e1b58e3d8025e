"""What the recording tests (and tests/recording/measure.py) read back from a file and how
they publish: a recording decoded with PyAV in the test (the SFU decodes nothing), and an
aiortc publisher sending ``testpeers.sync`` marks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
from av import AudioFrame, VideoFrame

from sfu import PublisherPeer, Router
from testpeers import TestClients, TestPublisher
from testpeers.sync import (
    BeepAudioTrack,
    FlashVideoTrack,
    SyncMarks,
    beep_times,
    flash_times,
    sync_offsets,
)


@dataclass
class Decoded:
    """A recording decoded end to end: every frame's time (s) and picture size."""

    container_duration: float
    size: int  # bytes
    boxes: list[str]  # an MP4 file's top-level boxes, in order
    video: list[tuple[float, VideoFrame]] = field(default_factory=list)
    audio: list[tuple[float, AudioFrame]] = field(default_factory=list)
    video_codec: str | None = None
    audio_codec: str | None = None

    @property
    def sizes(self) -> set[tuple[int, int]]:
        return {(f.width, f.height) for _, f in self.video}

    @property
    def video_seconds(self) -> float:
        return self.video[-1][0] - self.video[0][0] if self.video else 0.0

    @property
    def audio_end(self) -> float:
        if not self.audio:
            return 0.0
        seconds, frame = self.audio[-1]
        return seconds + frame.samples / frame.sample_rate

    def sync_offsets(self, period: float) -> list[float]:
        return sync_offsets(flash_times(self.video), beep_times(self.audio), period)


def decode(path: Path) -> Decoded:
    """Decode every frame of ``path`` (raises on a frame that does not decode)."""
    with av.open(str(path)) as container:
        duration = container.duration / av.time_base if container.duration else 0.0
        decoded = Decoded(duration, path.stat().st_size, mp4_boxes(path))
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for stream in streams:
            if stream.type == "video":
                decoded.video_codec = stream.codec_context.name
            else:
                decoded.audio_codec = stream.codec_context.name
        for packet in container.demux(streams):
            for frame in packet.decode():
                assert frame.pts is not None
                assert frame.time_base is not None
                seconds = float(frame.pts * frame.time_base)
                if isinstance(frame, VideoFrame):
                    decoded.video.append((seconds, frame))
                elif isinstance(frame, AudioFrame):
                    decoded.audio.append((seconds, frame))
    return decoded


def mp4_boxes(path: Path) -> list[str]:
    """The top-level boxes of an MP4 file (none for another file)."""
    boxes: list[str] = []
    with path.open("rb") as file:
        while header := file.read(8):
            if len(header) < 8:
                break
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if not kind.isalpha():
                return boxes if path.suffix == ".mp4" else []
            boxes.append(kind.decode())
            if size == 1:
                size = int.from_bytes(file.read(8), "big") - 8
            if size < 8:
                break
            file.seek(size - 8, 1)
    return boxes


class SyncPublishers:
    """aiortc publishers (``TestClients``) sending ``testpeers.sync`` marks, one after
    another on one schedule: a reconnect continues the marks."""

    def __init__(self, clients: TestClients, period: float = 1.0) -> None:
        self.clients = clients
        self.marks = SyncMarks(period=period)
        self.video_frames = 0  # sent by the tracks replaced or closed so far
        self._tracks: list[FlashVideoTrack] = []

    def publisher(
        self, *, codec: str = "vp8", width: int = 320, height: int = 240
    ) -> TestPublisher:
        """A publisher with the marks, not connected yet (its offer goes wherever)."""
        publisher = TestPublisher(codec=codec)
        publisher.video = self._track(width, height)  # type: ignore[assignment]
        publisher.audio = BeepAudioTrack(self.marks)  # type: ignore[assignment]
        self.clients.publishers.append(publisher)
        return publisher

    async def publish(
        self, router: Router, *, codec: str = "vp8", width: int = 320, height: int = 240
    ) -> tuple[TestPublisher, PublisherPeer]:
        publisher = self.publisher(codec=codec, width=width, height=height)
        session = await router.publish(await publisher.create_offer())
        await publisher.accept_answer(session.answer_sdp)
        return publisher, session

    async def switch(self, publisher: TestPublisher, *, width: int, height: int) -> None:
        """Another video source on the same sender (replaceTrack): camera → screen."""
        sender = next(t.sender for t in publisher.pc.getTransceivers() if t.kind == "video")
        sender.replaceTrack(self._track(width, height))

    @property
    def frames_sent(self) -> int:
        """Video frames every track has captured so far."""
        return sum(t.frames for t in self._tracks)

    def _track(self, width: int, height: int) -> FlashVideoTrack:
        track = FlashVideoTrack(self.marks, width, height)
        self._tracks.append(track)
        return track
