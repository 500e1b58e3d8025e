"""Recording a broadcast as it is sent: the publisher's encoded frames muxed into a file,
never decoded, never encoded.

A ``Recorder`` taps the producer of each kind (``Producer.add_tap``; with simulcast the top
layer sending), puts its packets back into frames (``sfu.frames``) and muxes them with PyAV
as they are: VP8 + Opus into WebM, H.264 + Opus into fragmented MP4. The file is written in
clusters / fragments of at most ``FRAGMENT_SECONDS`` (and at each video keyframe), each
written out when it is complete, so a killed process loses at most that much; the file is
closed with its index when the recording stops (an MP4 is then rewritten with its index in
front: ``sfu.recording_files.finalize``).

Timestamps come from RTP, per source (an SSRC of a producer): a source's first frame is
placed at the time it arrived since the recording began, each frame after it by its RTP
timestamp's step from the one before. A new source (a publisher that reconnected or was
replaced, another simulcast layer) and a step that goes back or differs by over
``RESYNC_SECONDS`` from the time between the two frames' arrivals (a track replaced in the
same stream, a restarted sender) are placed afresh by arrival, so the file keeps the
broadcast's own timeline, pauses included, and audio and video stay together; a sender's
clock that runs ahead of its arrivals (FFmpeg's ``-re`` sends its first half second at once)
stays as it is. Audio gaps are filled with Opus silence so that the audio track runs through.
The first frame written is the
first video keyframe (the first audio frame without video).

Limits (``RecordingSpec``) stop the recording with a reason; the broadcast goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import io
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from aiortc.rtp import RtpPacket
from av.container import OutputContainer
from av.stream import Stream

from sfu.events import RecordingStarted, RecordingStopped, SfuEvent
from sfu.frames import EncodedFrame, FrameAssembler
from sfu.producer import Producer
from sfu.recording_files import RecordingFileError, RecordingInfo, finalize
from sfu.track import PublishedTrack

logger = logging.getLogger(__name__)

# A cluster (WebM) or fragment (MP4) is written out at least this often.
FRAGMENT_SECONDS = 1.0
# How often the file size, the duration so far and the disk's free space are checked.
CHECK_SECONDS = 1.0
# A step between two frames' RTP timestamps this far from the time between their arrivals is
# a jump (a replaced track, a restarted sender): the source is placed afresh by arrival.
RESYNC_SECONDS = 1.0
# Frames of a kind are at least this far apart in the file (a muxer's time base is 1 ms).
MIN_STEP_SECONDS = 0.001
OPUS_FRAME_SECONDS = 0.02
# A 20 ms Opus frame of silence (TOC: CELT fullband 20 ms, mono; decoders upmix it).
OPUS_SILENCE = b"\xf8\xff\xfe"
# OpusHead (RFC 7845 5.1): version 1, 2 channels, no pre-skip (the stream is taken
# mid-way), 48 kHz, 0 dB, channel mapping family 0.
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, 48000, 0, 0)

VIDEO_CODECS = {"video/vp8": ("vp8", "webm"), "video/h264": ("h264", "mp4")}
AUDIO_CODECS = {"audio/opus": "opus"}
CLOCK_RATES = {"video": 90000, "audio": 48000}
MUXER_OPTIONS = {
    "webm": {
        "cluster_time_limit": str(int(FRAGMENT_SECONDS * 1000)),
        "flush_packets": "1",
    },
    "mp4": {
        "movflags": "frag_keyframe+empty_moov+default_base_moof",
        "frag_duration": str(int(FRAGMENT_SECONDS * 1_000_000)),
        "flush_packets": "1",
    },
}


@dataclass(frozen=True)
class RecordingSpec:
    """One recording: the file is ``directory/<recording_id>.<webm|mp4>``. A limit of 0 is
    none; the recording stops with ``"size_limit"`` past ``max_bytes``, ``"duration_limit"``
    past ``max_seconds``, ``"disk_full"`` when the disk's free space falls below
    ``min_free_bytes``."""

    recording_id: str
    directory: Path
    max_bytes: int = 0
    max_seconds: float = 0.0
    min_free_bytes: int = 0


@dataclass(frozen=True)
class RecordingStatus:
    """A recording under way. ``path``: None until the publisher's codecs are known;
    ``bytes``: written so far; ``seconds``: the recording's length so far; ``started_at``:
    ``time.time()`` when it was started."""

    recording_id: str
    path: Path | None
    bytes: int
    seconds: float
    started_at: float


def opus_samples(packet: bytes) -> int:
    """How many 48 kHz samples an Opus packet holds, from its TOC (RFC 6716 3.1); 0 for
    one too short to say."""
    if not packet:
        return 0
    config, code = packet[0] >> 3, packet[0] & 0x03
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    if code == 0:
        return frame
    if code in (1, 2):
        return 2 * frame
    return frame * (packet[1] & 0x3F) if len(packet) > 1 else 0


class _Input:
    """The tap on one producer for one kind: frames to the recorder, and a keyframe
    request whenever video waits for one."""

    def __init__(self, recorder: Recorder, producer: Producer) -> None:
        self.recorder = recorder
        self.producer = producer
        self.kind = producer.kind
        self.assembler = FrameAssembler(producer.mime_type)
        self._asked = False
        producer.add_tap(self)

    @property
    def waiting_keyframe(self) -> bool:
        return self.assembler.waiting_keyframe

    def on_packet(self, packet: RtpPacket, now: float) -> None:
        frames = self.assembler.push(packet, now)
        if self.assembler.waiting_keyframe:
            if not self._asked:
                self._asked = True
                self.recorder.spawn(self.producer.request_keyframe(join=True))
        else:
            self._asked = False
        for frame in frames:
            self.recorder.write(self, frame)

    def close(self, now: float) -> list[EncodedFrame]:
        """Stop tapping; the frames the packets held still complete."""
        self.producer.remove_tap(self)
        return self.assembler.flush(now)


class _Track:
    """One stream of the file and the placing of its frames in time (see the module)."""

    def __init__(self, stream: Stream, kind: str) -> None:
        self.stream = stream
        self.kind = kind
        self.clock_rate = CLOCK_RATES[kind]
        self.time_base = Fraction(1, self.clock_rate)
        self.source: tuple[int, int] | None = None  # (id of the input, SSRC)
        self.last_timestamp = 0  # the last frame's RTP timestamp
        self.last_elapsed = 0.0  # when it arrived, since the recording's first frame
        self.last_seconds = -1.0  # its time in the file
        self.end = 0.0  # ... and where it ends (an audio frame's duration after it)
        self.frames = 0
        self.resyncs = 0

    def place(self, source: tuple[int, int], timestamp: int, elapsed: float) -> float:
        """Where a frame of ``source`` with RTP ``timestamp`` that arrived ``elapsed``
        seconds into the recording goes in the file (seconds)."""
        if source == self.source:
            ticks = (timestamp - self.last_timestamp) & 0xFFFFFFFF
            step = (ticks - (1 << 32) if ticks >= 1 << 31 else ticks) / self.clock_rate
            if step > 0 and abs(step - (elapsed - self.last_elapsed)) <= RESYNC_SECONDS:
                return self._placed(timestamp, elapsed, self.last_seconds + step)
            self.resyncs += 1
        self.source = source
        return self._placed(
            timestamp, elapsed, max(elapsed, self.last_seconds + MIN_STEP_SECONDS, 0.0)
        )

    def _placed(self, timestamp: int, elapsed: float, seconds: float) -> float:
        self.last_timestamp = timestamp
        self.last_elapsed = elapsed
        self.last_seconds = seconds
        return seconds


def _opus_parameters() -> Stream:
    """A stream whose codec parameters are Opus's, 48 kHz stereo, to add the recording's
    audio stream from: ``add_mux_stream`` sets no channel count, which WebM and MP4 need.
    Its container is never written and its codec context never opened: no encoder is
    made (a stream added from a template is not opened either)."""
    holder = av.open(io.BytesIO(), "w", format="webm")
    return holder.add_stream("opus", rate=48000)


class Recorder:
    """Records the router's publisher tracks (see the module). ``follow`` gives it the
    tracks when they change (a new publisher); it looks at ``tracks()`` itself every
    ``CHECK_SECONDS`` for a simulcast top layer that changed. ``stop`` ends it; its work
    after that (closing the file, in a thread) goes to ``spawn``."""

    def __init__(
        self,
        spec: RecordingSpec,
        *,
        router_id: str,
        emit: Callable[[SfuEvent], None],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        tracks: Callable[[], tuple[PublishedTrack, ...]],
    ) -> None:
        self.spec = spec
        self.router_id = router_id
        self.started_at = time.time()
        self.path: Path | None = None
        self.container_name: str | None = None
        self.stopped = False
        self._emit = emit
        self._spawn = spawn
        self._current_tracks = tracks
        self._video_codec: str | None = None
        self._inputs: dict[str, _Input] = {}
        self._kinds: set[str] = set()  # what the file records (chosen on the first tracks)
        self._container: OutputContainer | None = None
        self._tracks: dict[str, _Track] = {}
        self._origin = 0.0  # time.monotonic() of the first frame written
        self._size = (0, 0)
        self._bytes_muxed = 0
        self._file_bytes = 0
        self._checks: asyncio.TimerHandle | None = None
        # how long opening the file took, and the longest a frame's muxing (and writing) took
        self.open_seconds = 0.0
        self.mux_seconds_max = 0.0
        self._info: RecordingInfo | None = None

    # --- following the publisher ----------------------------------------------------------

    def follow(self, tracks: tuple[PublishedTrack, ...]) -> None:
        """Record the top sending layer of each kind in ``tracks`` from its next keyframe on."""
        if self.stopped:
            return
        now = time.monotonic()
        if self.container_name is None and tracks and not self._choose(tracks):
            return
        for track in tracks:
            if track.kind not in self._kinds:
                continue
            producer = track.default_layer(now)
            if track.kind == "video" and producer.mime_type.lower() not in VIDEO_CODECS:
                continue
            if track.kind == "video" and producer.mime_type.lower() != self._video_codec:
                self.stop(
                    "stopped",
                    f"the publisher now sends {producer.mime_type}, "
                    f"not {self._video_codec}: a recording keeps one codec",
                )
                return
            current = self._inputs.get(track.kind)
            if current is not None and current.producer is producer:
                continue
            if current is not None:
                self._write_all(current, current.close(now))
            self._inputs[track.kind] = _Input(self, producer)
        if self._checks is None:
            self._checks = asyncio.get_running_loop().call_later(CHECK_SECONDS, self._check)

    def _choose(self, tracks: tuple[PublishedTrack, ...]) -> bool:
        """The file's kind and streams, from the publisher's codecs; False if stopped."""
        kinds = {t.kind: t.offered_layers[0].mime_type.lower() for t in tracks}
        video, audio = kinds.get("video"), kinds.get("audio")
        if video is not None and video not in VIDEO_CODECS:
            self.stop("failed", f"{video} cannot be recorded (VP8 or H.264 can)")
            return False
        if audio is not None and audio in AUDIO_CODECS:
            self._kinds.add("audio")
        if video is not None:
            self._kinds.add("video")
            self._video_codec = video
            self.container_name = VIDEO_CODECS[video][1]
        elif self._kinds:
            self.container_name = "webm"
        else:
            self.stop("failed", "the publisher sends nothing that can be recorded")
            return False
        self.path = self.spec.directory / f"{self.spec.recording_id}.{self.container_name}"
        try:
            self.spec.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self.stop("failed", f"the recordings' directory cannot be made: {error}")
            return False
        return True

    # --- writing --------------------------------------------------------------------------

    def write(self, source: _Input, frame: EncodedFrame) -> None:
        """Mux one frame (``_Input`` calls it on the media path: no awaiting)."""
        if self.stopped or self._inputs.get(source.kind) is not source:
            return
        try:
            if self._container is None:
                began = time.perf_counter()
                if not self._open(source, frame):
                    return
                self.open_seconds = time.perf_counter() - began
            began = time.perf_counter()
            self._mux(source, frame)
            self.mux_seconds_max = max(self.mux_seconds_max, time.perf_counter() - began)
        except (av.error.FFmpegError, OSError) as error:
            self._write_failed(error)
            return
        track = self._tracks.get(frame.kind)
        if track is not None:
            self._check_limits(track.last_seconds)

    def _write_all(self, source: _Input, frames: list[EncodedFrame]) -> None:
        for frame in frames:
            self.write(source, frame)

    def _open(self, source: _Input, frame: EncodedFrame) -> bool:
        """Open the file on the first video keyframe (the first audio frame without video);
        False while it waits for it."""
        if "video" in self._kinds and not (frame.kind == "video" and frame.keyframe):
            return False
        size = frame.size or source.producer.frame_size
        if frame.kind == "video" and size is None:
            return False  # a keyframe whose picture size could not be read: the next one
        if self.spec.min_free_bytes and self._free_bytes() < self.spec.min_free_bytes:
            self.stop("disk_full", self._disk_full_detail())
            return False
        assert self.path is not None
        assert self.container_name is not None
        container = av.open(
            str(self.path),
            "w",
            format=self.container_name,
            container_options=MUXER_OPTIONS[self.container_name],
        )
        if "video" in self._kinds:
            assert size is not None
            assert self._video_codec is not None
            self._size = size
            video = container.add_mux_stream(
                VIDEO_CODECS[self._video_codec][0], width=size[0], height=size[1]
            )
            video.time_base = Fraction(1, CLOCK_RATES["video"])
            self._tracks["video"] = _Track(video, "video")
        if "audio" in self._kinds:
            audio = container.add_stream_from_template(_opus_parameters(), opaque=True)
            assert audio.codec_context is not None
            audio.codec_context.extradata = OPUS_HEAD
            audio.time_base = Fraction(1, CLOCK_RATES["audio"])
            self._tracks["audio"] = _Track(audio, "audio")
        self._container = container
        self._origin = frame.arrival
        self._emit(
            RecordingStarted(
                router_id=self.router_id,
                recording_id=self.spec.recording_id,
                path=str(self.path),
                container=self.container_name,
            )
        )
        logger.info(
            "recording started",
            extra={"router_id": self.router_id, "recording_id": self.spec.recording_id},
        )
        return True

    def _mux(self, source: _Input, frame: EncodedFrame) -> None:
        track = self._tracks.get(frame.kind)
        elapsed = frame.arrival - self._origin
        if track is None or elapsed < 0:
            return  # before the first frame written (audio before the first keyframe)
        previous = track.last_seconds
        seconds = track.place((id(source), frame.ssrc), frame.timestamp, elapsed)
        if frame.kind == "audio" and previous >= 0:
            self._fill_silence(track, previous, seconds)
        self._packet(track, frame.data, seconds, frame.keyframe or frame.kind == "audio")
        if frame.kind == "video":
            track.frames += 1
            size = frame.size
            if frame.keyframe and size and size[0] * size[1] > self._size[0] * self._size[1]:
                self._size = size  # what the recording is reported as: its largest picture

    def _fill_silence(self, track: _Track, previous: float, until: float) -> None:
        """Opus silence from the frame at ``previous`` to the one at ``until``, so that the
        audio runs through a loss or a pause (players may stop at a gap in it)."""
        at = previous + OPUS_FRAME_SECONDS
        while until - at >= OPUS_FRAME_SECONDS / 2:
            self._packet(track, OPUS_SILENCE, at, True)
            at += OPUS_FRAME_SECONDS

    def _packet(self, track: _Track, data: bytes, seconds: float, keyframe: bool) -> None:
        assert self._container is not None
        packet = av.Packet(data)
        packet.stream = track.stream
        packet.time_base = track.time_base
        packet.pts = packet.dts = round(seconds * track.clock_rate)
        if track.kind == "audio":  # the file's duration then covers its last frame
            packet.duration = opus_samples(data)
        track.end = seconds + (packet.duration or 0) / track.clock_rate
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        self._bytes_muxed += len(data)

    def _write_failed(self, error: Exception) -> None:
        code = getattr(error, "errno", None)
        if code == errno.ENOSPC:
            self.stop("disk_full", "the disk is full")
        else:
            logger.warning(
                "recording failed",
                extra={"router_id": self.router_id, "recording_id": self.spec.recording_id},
                exc_info=True,
            )
            self.stop("failed", f"writing the file failed: {error}")

    # --- limits ---------------------------------------------------------------------------

    @property
    def seconds(self) -> float:
        return max((t.last_seconds for t in self._tracks.values()), default=0.0)

    @property
    def bytes(self) -> int:
        return max(self._bytes_muxed, self._file_bytes)

    def status(self) -> RecordingStatus:
        return RecordingStatus(
            recording_id=self.spec.recording_id,
            path=self.path,
            bytes=self.bytes,
            seconds=max(self.seconds, 0.0),
            started_at=self.started_at,
        )

    def _check_limits(self, seconds: float) -> None:
        spec = self.spec
        if spec.max_seconds and seconds >= spec.max_seconds:
            self.stop("duration_limit", f"the recording reached its {spec.max_seconds:g} s limit")
        elif spec.max_bytes and self.bytes >= spec.max_bytes:
            self.stop("size_limit", f"the recording reached its {spec.max_bytes} byte limit")

    def _check(self) -> None:
        """Every ``CHECK_SECONDS``: the file's size and the disk's free space."""
        self._checks = None
        if self.stopped:
            return
        if self.path is not None and self._container is not None:
            with contextlib.suppress(OSError):
                self._file_bytes = self.path.stat().st_size
        if self.spec.min_free_bytes and self._free_bytes() < self.spec.min_free_bytes:
            self.stop("disk_full", self._disk_full_detail())
            return
        self._check_limits(self.seconds)
        if not self.stopped:
            self.follow(self._current_tracks())
        if not self.stopped and self._checks is None:
            self._checks = asyncio.get_running_loop().call_later(CHECK_SECONDS, self._check)

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.spec.directory).free

    def _disk_full_detail(self) -> str:
        return f"less than {self.spec.min_free_bytes // 1_000_000} MB free on the recordings' disk"

    # --- stopping -------------------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if not self.stopped:
            self._spawn(coroutine)
        else:
            coroutine.close()

    def stop(self, reason: str, detail: str = "") -> None:
        """Stop now: no frame is muxed after this call. The file is closed and checked (an
        MP4 rewritten) in a task, which then emits ``RecordingStopped``."""
        if self.stopped:
            return
        self.stopped = True
        if self._checks is not None:
            self._checks.cancel()
            self._checks = None
        now = time.monotonic()
        inputs, self._inputs = self._inputs, {}
        for source in inputs.values():
            frames = source.close(now)  # what the packets held completes still goes in
            try:
                for frame in frames if self._container is not None else ():
                    self._mux(source, frame)
            except (av.error.FFmpegError, OSError):
                pass  # the file is closed below, with what it has
        self._spawn(self._finish(reason, detail))

    async def _finish(self, reason: str, detail: str) -> None:
        info: RecordingInfo | None = None
        container, self._container = self._container, None
        if container is not None:
            try:
                await asyncio.to_thread(self._close_and_finalize, container)
            except (RecordingFileError, av.error.FFmpegError, OSError) as error:
                reason, detail = "failed", f"the file could not be closed: {error}"
            else:
                info = self._info
        elif not detail:
            detail = "nothing was recorded: no keyframe came"
        logger.info(
            "recording stopped",
            extra={
                "router_id": self.router_id,
                "recording_id": self.spec.recording_id,
                "reason": reason,
            },
        )
        self._emit(
            RecordingStopped(
                router_id=self.router_id,
                recording_id=self.spec.recording_id,
                path=str(self.path) if self.path is not None else "",
                reason=reason,
                detail=detail,
                duration=info.duration if info else 0.0,
                size=info.size if info else 0,
                video_codec=info.video_codec if info else None,
                audio_codec=info.audio_codec if info else None,
                width=info.width if info else None,
                height=info.height if info else None,
                video_frames=info.video_frames if info else 0,
            )
        )

    def _close_and_finalize(self, container: OutputContainer) -> None:
        """In a thread: write the file's end (WebM: Cues and Duration), then its facts; an
        MP4 is rewritten with its index in front."""
        container.close()
        assert self.path is not None
        assert self.container_name is not None
        if self.container_name == "mp4":
            info = finalize(self.path)  # (its header gives the first keyframe's size)
            if info.width is not None:
                info = dataclasses.replace(info, width=self._size[0], height=self._size[1])
            self._info = info
            return
        video = self._tracks.get("video")
        audio = self._tracks.get("audio")
        self._info = RecordingInfo(
            path=self.path,
            container=self.container_name,
            duration=max(t.end for t in self._tracks.values()),
            size=os.stat(self.path).st_size,
            video_codec="vp8" if video is not None else None,
            audio_codec="opus" if audio is not None else None,
            width=self._size[0] if video is not None else None,
            height=self._size[1] if video is not None else None,
            video_frames=video.frames if video is not None else 0,
        )
