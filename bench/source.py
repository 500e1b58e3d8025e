"""The one encoded source: a 720p30 test pattern in VP8 + an Opus sine, as plain RTP.

The pattern is encoded once into a WebM file (cached), then replayed in real time with
``-c copy`` for every server under test: every server receives the same bytes, and the
replay costs next to nothing, so encoding does not compete with the load generator.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

VIDEO_PT = 96
AUDIO_PT = 111
VIDEO_SSRC = 0x0B0E0001
AUDIO_SSRC = 0x0B0E0002


@dataclass(frozen=True)
class SourceSpec:
    width: int = 1280
    height: int = 720
    fps: int = 30
    video_kbps: int = 1400
    audio_kbps: int = 64
    keyframe_seconds: int = 2
    seconds: int = 30

    @property
    def encode_args(self) -> list[str]:
        return [
            "-f", "lavfi", "-i", f"testsrc2=size={self.width}x{self.height}:rate={self.fps}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(self.seconds),
            "-c:v", "libvpx", "-b:v", f"{self.video_kbps}k", "-minrate", f"{self.video_kbps}k",
            "-maxrate", f"{self.video_kbps}k", "-deadline", "realtime", "-cpu-used", "8",
            "-g", str(self.fps * self.keyframe_seconds), "-auto-alt-ref", "0",
            "-lag-in-frames", "0", "-error-resilient", "1",
            "-c:a", "libopus", "-b:a", f"{self.audio_kbps}k", "-ac", "2",
        ]  # fmt: skip

    def describe(self) -> str:
        return (
            f"testsrc2 {self.width}x{self.height}@{self.fps} VP8 (libvpx, CBR "
            f"{self.video_kbps} kbit/s, keyframe every {self.keyframe_seconds} s) + Opus sine "
            f"{self.audio_kbps} kbit/s, {self.seconds} s looped"
        )


def ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "onair-bench"


def encoded_file(spec: SourceSpec) -> Path:
    """The encoded source, made on first use (a few seconds of one core)."""
    key = hashlib.sha256(repr(spec.encode_args).encode()).hexdigest()[:12]
    path = cache_dir() / f"source-{key}.webm"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.webm")
        subprocess.run(
            [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *spec.encode_args, str(partial)],
            check=True,
        )
        partial.rename(path)
    return path


def replay_command(path: Path, video_port: int, audio_port: int) -> list[str]:
    """FFmpeg replaying the file forever as RTP to 127.0.0.1 (video and audio ports)."""

    def rtp(stream: str, pt: int, ssrc: int, port: int) -> list[str]:
        return [
            "-map", f"0:{stream}", "-c", "copy", "-f", "rtp", "-payload_type", str(pt),
            "-ssrc", str(ssrc), f"rtp://127.0.0.1:{port}?pkt_size=1200",
        ]  # fmt: skip

    return [
        ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin",
        "-re", "-stream_loop", "-1", "-i", str(path),
        *rtp("v", VIDEO_PT, VIDEO_SSRC, video_port),
        *rtp("a", AUDIO_PT, AUDIO_SSRC, audio_port),
    ]  # fmt: skip
