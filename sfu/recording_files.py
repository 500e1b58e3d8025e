"""Recording files as they are left on disk: what is in one (``RecordingInfo``) and making one
playable (``finalize``) without decoding: demux and mux, packets as they are.

A recording is written as it goes (``sfu.recorder``): WebM (VP8 + Opus) in clusters, or
fragmented MP4 (H.264 + Opus) in fragments, so a process killed mid-recording leaves a file
whose last cluster or fragment may be cut short and which has no duration and no index.
``finalize`` copies its packets, up to the first one it cannot read, into a new file of the
same kind with both (WebM: Cues and Duration; MP4: a regular file with its index in front,
which every browser seeks in at once), and replaces the old one. A WebM file closed properly,
and an MP4 file that is not fragmented, are only read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from av.container import InputContainer

logger = logging.getLogger(__name__)

_EBML_SEGMENT = b"\x18\x53\x80\x67"
_EBML_UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
_MP4_FASTSTART = {"movflags": "+faststart"}
# Demuxing reads what the file says. FFmpeg's stream probing (avformat_find_stream_info)
# would open a decoder for each stream and decode a first frame to learn its pixel format,
# which copying packets does not need: no codec is allowed (its header parsers still read
# the picture size), so none is ever opened.
_PROBE = {"probesize": "65536", "analyzeduration": "0", "codec_whitelist": "none"}


class RecordingFileError(Exception):
    """Nothing playable is in the file; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RecordingInfo:
    """What a finished recording file holds. ``width``/``height``: the picture size its
    header gives (the first keyframe's: a later keyframe may change it in the stream)."""

    path: Path
    container: str  # "webm" | "mp4"
    duration: float  # seconds
    size: int  # bytes
    video_codec: str | None  # "vp8", "h264"
    audio_codec: str | None  # "opus"
    width: int | None
    height: int | None
    video_frames: int


def container_of(path: Path) -> str:
    """ "webm" or "mp4", from the file name."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("webm", "mp4"):
        raise RecordingFileError(f"not a recording file: {path.name}")
    return suffix


def finalize(path: Path) -> RecordingInfo:
    """Make ``path`` a playable file with a duration and an index, and say what is in it.

    A file a crash left open is rewritten from its packets (up to the first it cannot
    read); a closed WebM file is only read. Blocking (file I/O): call it in a thread. Raises
    ``RecordingFileError`` if the file holds no packet it can copy."""
    container = container_of(path)
    if not path.exists():
        raise RecordingFileError("the file does not exist")
    finished = not _webm_left_open(path) if container == "webm" else not _mp4_fragmented(path)
    if finished:
        return _read(path, container)
    return _remux(path, container)


def _webm_left_open(path: Path) -> bool:
    """Whether the WebM file's Segment still has the unknown size it is written with: the
    muxer writes its real size (with Cues and Duration) only when the file is closed."""
    with path.open("rb") as file:
        head = file.read(64)
    at = head.find(_EBML_SEGMENT)
    return at < 0 or head[at + 4 : at + 12] == _EBML_UNKNOWN_SIZE


def _mp4_fragmented(path: Path) -> bool:
    """Whether the MP4 file has a fragment (``moof``) among its top-level boxes, or is not
    readable as boxes at all; a regular file has its samples in one ``mdat``."""
    with path.open("rb") as file:
        while header := file.read(8):
            if len(header) < 8:
                return True
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if kind == b"moof":
                return True
            if size == 1:
                size = int.from_bytes(file.read(8), "big") - 8
            elif size == 0:  # the last box, to the end of the file
                return False
            if size < 8:
                return True
            file.seek(size - 8, os.SEEK_CUR)
    return False


def _open_input(path: Path) -> InputContainer:
    try:
        return av.open(str(path), "r", options=_PROBE)
    except (av.error.FFmpegError, OSError) as error:
        raise RecordingFileError(f"unreadable: {error}") from error


def _read(path: Path, container: str) -> RecordingInfo:
    """Count the file's video packets (demuxed, not decoded) and take its header's facts."""
    with _open_input(path) as source:
        video_frames = 0
        end = 0.0
        try:
            for packet in source.demux():
                if packet.pts is None or packet.time_base is None:
                    continue
                if packet.stream.type == "video":
                    video_frames += 1
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        except av.error.FFmpegError:
            pass  # a cut-off end: what came before counts
        duration = source.duration / av.time_base if source.duration else end
        return _info(path, container, source, duration, video_frames)


def _info(
    path: Path, container: str, source: InputContainer, duration: float, video_frames: int
) -> RecordingInfo:
    video = source.streams.video[0] if source.streams.video else None
    audio = source.streams.audio[0] if source.streams.audio else None
    return RecordingInfo(
        path=path,
        container=container,
        duration=duration,
        size=path.stat().st_size,
        video_codec=video.codec_context.name if video is not None else None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        width=video.codec_context.width or None if video is not None else None,
        height=video.codec_context.height or None if video is not None else None,
        video_frames=video_frames,
    )


def _remux(path: Path, container: str) -> RecordingInfo:
    """Copy the file's packets into a new file of its kind, then put that in its place."""
    temporary = path.with_name(f".{path.name}.finalizing")
    copied = 0
    with _open_input(path) as source:
        streams = [s for s in source.streams if s.type in ("video", "audio")]
        if not streams:
            raise RecordingFileError("no audio or video in the file")
        options = _MP4_FASTSTART if container == "mp4" else {}
        with av.open(str(temporary), "w", format=container, container_options=options) as out:
            mapping = {s.index: out.add_stream_from_template(s) for s in streams}
            last_dts: dict[int, int] = {}
            try:
                for packet in source.demux(streams):
                    if packet.dts is None or packet.size == 0:
                        continue  # a demuxer's end-of-stream marker
                    if packet.is_corrupt:
                        continue  # cut short by the end of the file
                    target = mapping[packet.stream.index]
                    if packet.dts <= last_dts.get(target.index, -(2**62)):
                        continue  # out of order after a cut: a muxer refuses it
                    last_dts[target.index] = packet.dts
                    packet.stream = target
                    out.mux(packet)
                    copied += 1
            except av.error.FFmpegError as error:
                logger.info(
                    "recording file cut short: copied what came before",
                    extra={"path": str(path), "error": str(error)},
                )
        if copied == 0:
            temporary.unlink(missing_ok=True)
            raise RecordingFileError("no packet in the file")
    os.replace(temporary, path)
    return _read(path, container)
