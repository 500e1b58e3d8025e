"""The one encoded source: a 720p30 test pattern in VP8 (or H.264) + an Opus sine, as plain RTP.

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
    # "h264": libx264 constrained baseline (what aiortc offers), in MPEG-TS so that every
    # keyframe carries its SPS and PPS in band, as WebRTC senders send them
    video_codec: str = "vp8"

    @property
    def suffix(self) -> str:
        return ".ts" if self.video_codec == "h264" else ".webm"

    @property
    def encode_args(self) -> list[str]:
        kbps, gop = f"{self.video_kbps}k", str(self.fps * self.keyframe_seconds)
        if self.video_codec == "h264":
            video = [
                "-c:v", "libx264", "-b:v", kbps, "-minrate", kbps, "-maxrate", kbps,
                "-bufsize", kbps, "-g", gop, "-profile:v", "baseline", "-level", "3.1",
                "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
            ]  # fmt: skip
        else:
            video = [
                "-c:v", "libvpx", "-b:v", kbps, "-minrate", kbps,
                "-maxrate", kbps, "-deadline", "realtime", "-cpu-used", "8",
                "-g", gop, "-auto-alt-ref", "0",
                "-lag-in-frames", "0", "-error-resilient", "1",
            ]  # fmt: skip
        return [
            "-f", "lavfi", "-i", f"testsrc2=size={self.width}x{self.height}:rate={self.fps}",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", str(self.seconds),
            *video,
            "-c:a", "libopus", "-b:a", f"{self.audio_kbps}k", "-ac", "2",
        ]  # fmt: skip

    def describe(self) -> str:
        encoder = "libx264 baseline" if self.video_codec == "h264" else "libvpx"
        return (
            f"testsrc2 {self.width}x{self.height}@{self.fps} {self.video_codec.upper()} "
            f"({encoder}, CBR "
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
    path = cache_dir() / f"source-{key}{spec.suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".partial{spec.suffix}")
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


@dataclass(frozen=True)
class LayeredSourceSpec:
    """The simulcast source: the same test pattern as ``SourceSpec`` (the top layer is its
    picture and rate), each layer encoded on its own, VP8 only (the audio is the
    publisher's). ``layers`` are (width, height, kbit/s), lowest first."""

    layers: tuple[tuple[int, int, int], ...] = ((320, 180, 150), (640, 360, 500), (1280, 720, 1400))
    fps: int = 30
    keyframe_seconds: int = 2
    seconds: int = 10

    def encode_args(self, outputs: list[str]) -> list[str]:
        width, height, _ = self.layers[-1]
        split = f"[0:v]split={len(self.layers)}" + "".join(
            f"[s{i}]" for i in range(len(self.layers))
        )
        scales = [f"[s{i}]scale={w}:{h}[v{i}]" for i, (w, h, _) in enumerate(self.layers)]
        args = [
            "-f", "lavfi", "-t", str(self.seconds),
            "-i", f"testsrc2=size={width}x{height}:rate={self.fps}",
            "-filter_complex", ";".join([split, *scales]),
        ]  # fmt: skip
        for i, ((_, _, kbps), output) in enumerate(zip(self.layers, outputs, strict=True)):
            args += [
                "-map", f"[v{i}]", "-c:v", "libvpx", "-b:v", f"{kbps}k", "-minrate", f"{kbps}k",
                "-maxrate", f"{kbps}k", "-deadline", "realtime", "-cpu-used", "8",
                "-g", str(self.fps * self.keyframe_seconds), "-auto-alt-ref", "0",
                "-lag-in-frames", "0", "-error-resilient", "1", output,
            ]  # fmt: skip
        return args

    def describe(self) -> str:
        layers = ", ".join(f"{w}x{h} {kbps} kbit/s" for w, h, kbps in self.layers)
        return (
            f"testsrc2 as {len(self.layers)} VP8 layers ({layers}; libvpx CBR, {self.fps} fps, "
            f"keyframe every {self.keyframe_seconds} s, {self.seconds} s looped) + an Opus tone"
        )


def encoded_layers(spec: LayeredSourceSpec) -> list[list[bytes]]:
    """Each layer's encoded VP8 frames, lowest first (encoded on first use, then cached)."""
    import av

    key = hashlib.sha256(repr(spec.encode_args(["-"] * len(spec.layers))).encode()).hexdigest()[:12]
    paths = [cache_dir() / f"layer-{key}-{i}.webm" for i in range(len(spec.layers))]
    if not all(path.exists() for path in paths):
        cache_dir().mkdir(parents=True, exist_ok=True)
        partial = [str(path.with_suffix(".partial.webm")) for path in paths]
        subprocess.run(
            [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *spec.encode_args(partial)],
            check=True,
        )
        for made, path in zip(partial, paths, strict=True):
            Path(made).rename(path)
    frames = []
    for path in paths:
        with av.open(str(path)) as container:
            frames.append([bytes(p) for p in container.demux(video=0) if p.size])
    return frames
