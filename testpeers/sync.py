"""Tracks that mark the same instants in picture and sound, to measure audio/video sync in
what a recording (or a viewer) got: a bright frame and the start of a beep at each mark.

``SyncMarks`` is the schedule: a mark every ``period`` seconds from ``origin`` (monotonic
time), which the first ``FlashVideoTrack`` to send sets to its first frame's time. A
``BeepAudioTrack`` with the same marks starts a beep on each mark's own sample. A video
track captures its frames on the marks' grid (every 1/fps from the origin; a track that
starts later, after a reconnect or a replaced track, waits for the grid), so the flash is on
the mark exactly. Frames carry their scheduled capture time, as aiortc's own test tracks
do. ``flash_times``/``beep_times`` find the marks in decoded media, ``sync_offsets`` pairs
them."""

from __future__ import annotations

import array
import asyncio
import fractions
import math
import time
from dataclasses import dataclass

from aiortc import MediaStreamTrack
from av import AudioFrame, VideoFrame
from av.frame import Frame

from testpeers import AUDIO_PTIME, AUDIO_SAMPLE_RATE, VIDEO_CLOCK_RATE, _Pacer

BEEP_SECONDS = 0.1
BEEP_FREQUENCY = 1000.0
_BRIGHT, _DARK = 235, 40
_BEEP = array.array(
    "h",
    (
        int(12000 * math.sin(2 * math.pi * BEEP_FREQUENCY * n / AUDIO_SAMPLE_RATE))
        for n in range(int(BEEP_SECONDS * AUDIO_SAMPLE_RATE))
    ),
)


@dataclass
class SyncMarks:
    """A mark every ``period`` seconds from ``origin`` (``time.monotonic()``; None until the
    first video frame)."""

    period: float = 1.0
    origin: float | None = None


class FlashVideoTrack(MediaStreamTrack):
    """Dark frames, with a bright one on each mark (see the module)."""

    kind = "video"

    def __init__(self, marks: SyncMarks, width: int = 320, height: int = 240, fps: int = 30):
        super().__init__()
        self.marks = marks
        self.width, self.height, self.fps = width, height, fps
        self._pacer = _Pacer(fps)
        self._start: float | None = None
        self.frames = 0
        chroma = bytes([128]) * ((width // 2) * (height // 2))
        self._planes = {
            bright: (bytes([bright]) * (width * height), chroma) for bright in (_BRIGHT, _DARK)
        }

    async def recv(self) -> Frame:
        if self._start is None:
            now = time.monotonic()
            if self.marks.origin is None:
                self.marks.origin = now
            interval = 1 / self.fps
            ahead = (self.marks.origin - now) % interval  # to the grid's next point
            await asyncio.sleep(ahead)
            self._start = now + ahead
        index = await self._pacer.next()
        captured = self._start + index / self.fps
        assert self.marks.origin is not None
        since = (captured - self.marks.origin) % self.marks.period
        flash = since < 0.5 / self.fps or self.marks.period - since < 0.5 / self.fps
        luma, chroma = self._planes[_BRIGHT if flash else _DARK]
        frame = VideoFrame(self.width, self.height, "yuv420p")
        frame.planes[0].update(luma)
        frame.planes[1].update(chroma)
        frame.planes[2].update(chroma)
        frame.pts = index * (VIDEO_CLOCK_RATE // self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self.frames += 1
        return frame


class BeepAudioTrack(MediaStreamTrack):
    """Silence, with a beep starting on each mark's sample (see the module)."""

    kind = "audio"

    def __init__(self, marks: SyncMarks) -> None:
        super().__init__()
        self.marks = marks
        self._samples = int(AUDIO_SAMPLE_RATE * AUDIO_PTIME)
        self._pacer = _Pacer(1 / AUDIO_PTIME)
        self._start: float | None = None

    async def recv(self) -> Frame:
        index = await self._pacer.next()
        if self._start is None:
            self._start = time.monotonic()
        begins = self._start + index * AUDIO_PTIME
        samples = bytearray(self._samples * 2)
        origin = self.marks.origin
        if origin is not None:
            period = round(self.marks.period * AUDIO_SAMPLE_RATE)
            first = round((begins - origin) * AUDIO_SAMPLE_RATE)
            out = array.array("h", bytes(samples))
            for n in range(self._samples):
                at = first + n
                if at >= 0 and at % period < len(_BEEP):
                    out[n] = _BEEP[at % period]
            samples = bytearray(out.tobytes())
        frame = AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(bytes(samples))
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = index * self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
        return frame


def flash_times(frames: list[tuple[float, VideoFrame]]) -> list[float]:
    """When the decoded video (``(seconds, frame)``) shows a flash: a bright frame after a
    dark one."""
    times: list[float] = []
    bright_before = True
    for seconds, frame in frames:
        plane = frame.planes[0]
        row = bytes(plane)[plane.line_size * (frame.height // 2) :][: frame.width]
        bright = sum(row) / len(row) > (_BRIGHT + _DARK) / 2
        if bright and not bright_before:
            times.append(seconds)
        bright_before = bright
    return times


def beep_times(frames: list[tuple[float, AudioFrame]], threshold: float = 0.1) -> list[float]:
    """When the decoded audio (``(seconds, frame)``, float samples as Opus decodes to)
    starts a beep: a sample over ``threshold`` after at least ``BEEP_SECONDS`` / 2 below."""
    times: list[float] = []
    last_loud = -math.inf
    for seconds, frame in frames:
        assert frame.format.name in ("flt", "fltp"), frame.format.name
        samples = array.array("f", bytes(frame.planes[0]))[: frame.samples]
        if frame.format.name == "flt":  # interleaved: take the first channel
            samples = samples[:: frame.layout.nb_channels]
        if max(samples, default=0.0) <= threshold and -min(samples, default=0.0) <= threshold:
            continue
        for n, value in enumerate(samples):
            if abs(value) > threshold:
                t = seconds + n / frame.sample_rate
                if t - last_loud >= BEEP_SECONDS / 2:
                    times.append(t)
                last_loud = t
    return times


def sync_offsets(flashes: list[float], beeps: list[float], period: float) -> list[float]:
    """Audio minus video (s) for each flash with a beep within ``period`` / 2 of it:
    positive when the sound comes after the picture."""
    offsets: list[float] = []
    for flash in flashes:
        beep = min(beeps, key=lambda b: abs(b - flash), default=None)
        if beep is not None and abs(beep - flash) < period / 2:
            offsets.append(beep - flash)
    return offsets
