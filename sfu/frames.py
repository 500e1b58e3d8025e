"""Encoded frames from one producer's RTP packets, for what keeps media rather than forwarding
it (a recording, a thumbnail): packets put back in order, grouped into frames and depayloaded,
never decoded.

``FrameAssembler`` takes the packets of one incoming stream as they arrive (a ``Producer``'s
tap hands them over after aiortc's receiver has unwrapped retransmissions) and returns the
frames they complete: a VP8 frame as the decoder takes it, an H.264 access unit in Annex-B
form, an Opus packet as it is. A video frame is its packets with one timestamp: it is given
out when the next packet in order has another (a sender may mark the end of its parameter
sets apart from the picture that follows with the same timestamp, as FFmpeg does), or when
the stream ends. A packet missing for ``max_delay`` seconds (or while
``max_packets`` wait behind it) is lost: the frame it belonged to is dropped, and video waits
for the next keyframe, since the frames after a loss refer to what was lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtp import RtpPacket

from sfu.keyframe import FRAME_SIZE_READERS, KEYFRAME_DETECTORS

_SEQ_MASK = 0xFFFF
_SEQ_HALF = 0x8000
# A sequence number this far ahead of the one due is a restart of the stream, not loss
_MAX_JUMP = 0x1000
# The longest frame taken (packets): a keyframe of a 1080p picture is about 200.
MAX_FRAME_PACKETS = 1024

Depayloader = Callable[[bytes], bytes]

DEPAYLOADERS: dict[str, Depayloader] = {
    "video/vp8": vp8_depayload,
    "video/h264": h264_depayload,
}


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One frame of one incoming stream. ``data``: a VP8 frame, an H.264 access unit
    (Annex-B) or an audio packet's payload; ``timestamp``: its RTP timestamp; ``arrival``:
    ``time.monotonic()`` when its last packet arrived; ``size``: the picture size a
    keyframe tells (None for other frames, and where the codec's is not read)."""

    kind: str
    data: bytes
    timestamp: int
    ssrc: int
    keyframe: bool
    arrival: float
    size: tuple[int, int] | None = None


class FrameAssembler:
    """Frames from the RTP packets of one stream (see the module).

    ``push`` each packet with the time it arrived; it returns the frames completed,
    in order. A new SSRC starts a new stream (whatever was held of the previous one is
    dropped). ``waiting_keyframe`` is true while video waits for a keyframe (at first, and
    after a loss): whoever feeds it should ask the publisher for one.
    """

    def __init__(self, mime_type: str, *, max_delay: float = 0.5, max_packets: int = 256) -> None:
        mime = mime_type.lower()
        self.kind = mime.split("/", 1)[0]
        self.max_delay = max_delay
        self.max_packets = max_packets
        self._video = self.kind == "video"
        self._depayload = DEPAYLOADERS.get(mime)
        if self._video and self._depayload is None:
            raise ValueError(f"no depayloader for {mime_type}")
        self._detect_keyframe = KEYFRAME_DETECTORS.get(mime)
        self._read_size = FRAME_SIZE_READERS.get(mime)
        self._ssrc: int | None = None
        self._next: int | None = None  # the sequence number due next
        self._held: dict[int, tuple[RtpPacket, float]] = {}  # arrived before _next
        self._parts: list[bytes] = []  # the frame under way
        self._frame_timestamp = 0
        self._frame_keyframe = False
        self._frame_size: tuple[int, int] | None = None
        self._frame_arrival = 0.0  # when its last packet so far arrived
        self._marked = False  # a packet of it had the marker bit
        self.waiting_keyframe = self._video
        self.frames = 0
        self.packets_lost = 0
        # incomplete, unreadable, or skipped while waiting for a keyframe
        self.frames_dropped = 0
        self._skipped_timestamp: int | None = None
        self.packets_late = 0  # arrived after they were counted lost, or twice

    def push(self, packet: RtpPacket, now: float) -> list[EncodedFrame]:
        """Take ``packet`` (arrived at ``now``, ``time.monotonic()``); the frames it completes,
        with any that a loss given up on (``max_delay``) lets through."""
        out: list[EncodedFrame] = []
        if packet.ssrc != self._ssrc:
            self._restart(packet.ssrc, out)
        sequence_number = packet.sequence_number
        if self._next is None:
            self._next = sequence_number
        ahead = (sequence_number - self._next) & _SEQ_MASK
        if ahead >= _SEQ_HALF or sequence_number in self._held:
            self.packets_late += 1
            self._drain(out, now)  # it still tells the time: a gap may be given up
            return out
        if ahead > _MAX_JUMP:  # a jump no reordering explains: a new start
            self._lose(0, out)
            self._held.clear()
            self._next = sequence_number
        self._held[sequence_number] = (packet, now)
        self._drain(out, now)
        return out

    def flush(self, now: float) -> list[EncodedFrame]:
        """The stream ends: what the packets held complete, as if every gap were lost. A
        frame whose last packet (its marker) has not arrived is dropped."""
        out: list[EncodedFrame] = []
        while self._held:
            self._skip_gap(out)
            self._drain(out, now, give_up=False)
        self._end_frame(out)
        return out

    def _restart(self, ssrc: int, out: list[EncodedFrame]) -> None:
        if self._held:
            self.frames_dropped += 1
        self._end_frame(out)
        self._ssrc = ssrc
        self._next = None
        self._held.clear()
        self._parts = []
        self.waiting_keyframe = self._video

    def _drain(self, out: list[EncodedFrame], now: float, *, give_up: bool = True) -> None:
        held = self._held
        while True:
            assert self._next is not None
            entry = held.pop(self._next, None)
            if entry is not None:
                self._next = (self._next + 1) & _SEQ_MASK
                self._take(entry[0], entry[1], out)
                continue
            if not held or not give_up:
                return
            oldest = min(arrival for _, arrival in held.values())
            if now - oldest < self.max_delay and len(held) <= self.max_packets:
                return
            self._skip_gap(out)

    def _skip_gap(self, out: list[EncodedFrame]) -> None:
        """Count the packets before the first one held as lost and go on from it."""
        assert self._next is not None
        first = min(self._held, key=lambda s: (s - (self._next or 0)) & _SEQ_MASK)
        self._lose((first - self._next) & _SEQ_MASK, out)
        self._next = first

    def _lose(self, count: int, out: list[EncodedFrame]) -> None:
        self.packets_lost += count & _SEQ_MASK
        self._end_frame(out)
        if self._video:
            self.waiting_keyframe = True

    def _end_frame(self, out: list[EncodedFrame]) -> None:
        """No more of the frame under way: given out if its marker came, else dropped."""
        if self._parts and self._marked:
            self._complete(out)
        elif self._parts:
            self.frames_dropped += 1
            self._parts = []

    def _take(self, packet: RtpPacket, arrival: float, out: list[EncodedFrame]) -> None:
        """The next packet in sequence order."""
        if not self._video:
            self._emit(out, [packet.payload], packet.timestamp, False, None, arrival)
            return
        if self._parts and packet.timestamp != self._frame_timestamp:
            # a new frame, in sequence after the last one: that one is whole (with or
            # without its marker)
            self._complete(out)
        if not self._parts:
            keyframe = self._detect_keyframe is not None and self._detect_keyframe(packet.payload)
            if self.waiting_keyframe and not keyframe:
                if packet.timestamp != self._skipped_timestamp:
                    self._skipped_timestamp = packet.timestamp
                    self.frames_dropped += 1
                return
            self.waiting_keyframe = False
            self._frame_timestamp = packet.timestamp
            self._frame_keyframe = keyframe
            self._frame_size = (
                self._read_size(packet.payload) if keyframe and self._read_size else None
            )
            self._marked = False
        elif len(self._parts) >= MAX_FRAME_PACKETS:
            self._marked = False
            self._end_frame(out)
            self.waiting_keyframe = True
            return
        self._parts.append(packet.payload)
        self._frame_arrival = arrival
        self._marked = self._marked or bool(packet.marker)

    def _complete(self, out: list[EncodedFrame]) -> None:
        parts, self._parts = self._parts, []
        depayload = self._depayload
        if depayload is not None:
            try:
                parts = [depayload(part) for part in parts]
            except ValueError:  # a payload aiortc cannot read (an H.264 STAP-B, say)
                self.frames_dropped += 1
                self.waiting_keyframe = True
                return
        self._emit(
            out,
            parts,
            self._frame_timestamp,
            self._frame_keyframe,
            self._frame_size,
            self._frame_arrival,
        )

    def _emit(
        self,
        out: list[EncodedFrame],
        parts: list[bytes],
        timestamp: int,
        keyframe: bool,
        size: tuple[int, int] | None,
        arrival: float,
    ) -> None:
        assert self._ssrc is not None
        self.frames += 1
        out.append(
            EncodedFrame(
                kind=self.kind,
                data=b"".join(parts),
                timestamp=timestamp,
                ssrc=self._ssrc,
                keyframe=keyframe,
                arrival=arrival,
                size=size,
            )
        )
