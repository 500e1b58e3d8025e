"""Per-viewer-track rewriting of RTP sequence numbers and timestamps, and of VP8's picture
IDs and TL0PICIDX."""

from __future__ import annotations

import random
from typing import Any

from sfu import native as sfu_native

_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF
_SEQ_HALF = 0x8000
_TS_HALF = 0x80000000
# how far behind the newest packet a late (reordered, retransmitted) packet is still mapped
_SEQ_WINDOW = 0x4000
# VP8 payload descriptor (RFC 7741, 4.2): X in the first octet; I, L in the extension octet;
# M (a 15-bit picture ID) in the picture ID's first octet
_VP8_X = 0x80
_VP8_I = 0x80
_VP8_L = 0x40
_VP8_M = 0x80
_PICTURE_ID_MASK = 0x7FFF
_PICTURE_ID_HALF = 0x4000
_TL0_MASK = 0xFF
_TL0_HALF = 0x80


class Mapping:
    """A munger's state where the C loop does not forward by it: the fields of ``struct
    onair_mapping`` (``sfu.native.source``), under the same names."""

    __slots__ = (
        "first_in_seq",
        "last_out_picture_id",
        "last_out_seq",
        "last_out_time",
        "last_out_tl0",
        "last_out_ts",
        "picture_id_offset",
        "seq_offset",
        "tl0_offset",
        "ts_offset",
        "vp8",
    )

    def __init__(self) -> None:
        self.first_in_seq = 0
        self.seq_offset = 0
        self.ts_offset = 0
        self.last_out_seq = 0
        self.last_out_ts = 0
        self.last_out_time = 0.0
        self.vp8 = 0
        self.picture_id_offset = 0
        self.tl0_offset = 0
        self.last_out_picture_id = 0
        self.last_out_tl0 = 0


class RtpMunger:
    """Maps one or more incoming RTP streams onto one continuous outgoing stream.

    Within a source the mapping is a fixed offset, so reordered and retransmitted
    packets keep their place. When the source changes (a publisher reconnects and
    its new stream has another SSRC, sequence space and clock origin), the next
    packet is re-based right after the last one sent: the sequence number
    continues by one and the timestamp advances by the wall-clock time elapsed,
    so the viewer's decoder sees one stream (as LiveKit's RTPMunger does).

    With ``vp8``, the payload descriptor's picture ID and TL0PICIDX are mapped the same way
    (``map_vp8``; LiveKit's VP8 munger does as much): a new source's first picture follows
    the last one sent. Each simulcast layer, and a restarted publisher, numbers its pictures
    on its own, and a receiver drops a frame whose picture ID is not after the last one it
    decoded (libwebrtc's frame buffer); unmapped, a layer switch froze the viewer's picture
    until its keyframe request (1-3 s) whenever the new layer's IDs were not ahead.

    Its state is ``mapping``: with ``native`` (where the C loop is built) a ``struct
    onair_mapping`` (``sfu.native``), which the C loop maps by while it forwards the
    stream and Python reads and writes in place otherwise (between them nothing is copied),
    else a ``Mapping``. The C loop maps as ``map`` does past a re-base (``forward.c`` holds
    that twin; tests/sfu/test_native.py runs both on the same packets); re-bases are
    Python's alone.
    """

    __slots__ = (
        "_clock_rate",
        "_rebase",
        "_rebase_vp8",
        "_started",
        "_vp8_started",
        "mapping",
        "native",
    )

    def __init__(self, clock_rate: int, *, native: bool = False, vp8: bool = False) -> None:
        # ``mapping`` is a struct onair_mapping (asked for, and the C loop is built)
        self.native = native and sfu_native.available()
        self._clock_rate = clock_rate
        self._rebase = True
        self._started = False  # a packet was mapped: a re-base continues from it
        self._rebase_vp8 = False  # the next picture ID and TL0PICIDX re-base the VP8 mapping
        self._vp8_started = False  # a picture ID or TL0PICIDX was mapped: a re-base follows it
        self.mapping: Any = sfu_native.new_mapping() if self.native else Mapping()
        # a random origin, as a fresh RTP stream would have (lower half of the
        # sequence space, to stay away from an early wrap)
        self.mapping.last_out_seq = random.randrange(_SEQ_HALF)
        self.mapping.last_out_ts = random.getrandbits(32)
        self.mapping.vp8 = int(vp8)

    @property
    def rebasing(self) -> bool:
        """The next packet re-bases the mapping (see ``switch_source``); the C loop maps by
        it only once that is done."""
        return self._rebase

    def switch_source(self) -> None:
        """The next packet comes from a new stream: re-base on it."""
        self._rebase = True

    def map(self, sequence_number: int, timestamp: int, now: float) -> tuple[int, int] | None:
        """Outgoing (sequence number, timestamp) of a packet that arrived at ``now``
        (``time.monotonic()``), or None for a packet older than the current
        source's first forwarded packet (or than 16384 packets before its newest)."""
        state = self.mapping
        if self._rebase:
            self._rebase = False
            if self._started:
                step = max(1, int((now - state.last_out_time) * self._clock_rate))
            else:
                step = 0
                self._started = True
            out_seq = (state.last_out_seq + 1) & _SEQ_MASK
            out_ts = (state.last_out_ts + step) & _TS_MASK
            self._rebase_vp8 = bool(state.vp8)
            state.first_in_seq = sequence_number
            state.seq_offset = (out_seq - sequence_number) & _SEQ_MASK
            state.ts_offset = (out_ts - timestamp) & _TS_MASK
            state.last_out_seq = out_seq
            state.last_out_ts = out_ts
            state.last_out_time = now
            return out_seq, out_ts

        since_first = (sequence_number - state.first_in_seq) & _SEQ_MASK
        if since_first >= _SEQ_HALF:
            return None
        if since_first > _SEQ_WINDOW:  # the window follows the stream round its 16 bits
            state.first_in_seq = (sequence_number - _SEQ_WINDOW) & _SEQ_MASK
        out_seq = (sequence_number + state.seq_offset) & _SEQ_MASK
        out_ts = (timestamp + state.ts_offset) & _TS_MASK
        if (out_seq - state.last_out_seq) & _SEQ_MASK < _SEQ_HALF:
            state.last_out_seq = out_seq
            state.last_out_ts = out_ts
            state.last_out_time = now
        return out_seq, out_ts

    def map_vp8(self, packet: bytes, payload_start: int) -> bytes:
        """``packet`` (its VP8 payload at ``payload_start``) with its picture ID and
        TL0PICIDX mapped into the outgoing stream, after ``map`` mapped its header. The
        first packet carrying them after a re-base re-bases them: they continue by one from
        the last sent. The C loop maps as this does past a re-base (``forward.c``)."""
        state = self.mapping
        if not state.vp8:
            return packet
        size = len(packet)
        pos = payload_start
        if size < pos + 3 or not packet[pos] & _VP8_X:
            return packet
        extension = packet[pos + 1]
        pos += 2
        picture_pos = tl0_pos = -1
        wide = False
        if extension & _VP8_I:
            picture_pos = pos
            wide = bool(packet[pos] & _VP8_M)
            pos += 2 if wide else 1
        if extension & _VP8_L:
            tl0_pos = pos
            pos += 1
        if pos > size or (picture_pos < 0 and tl0_pos < 0):
            return packet
        out = bytearray(packet)
        rebase, self._rebase_vp8 = self._rebase_vp8, False
        follow = rebase and self._vp8_started  # else the first source keeps its numbers
        self._vp8_started = True
        if picture_pos >= 0:
            if wide:
                picture_id = ((out[picture_pos] & 0x7F) << 8) | out[picture_pos + 1]
            else:
                picture_id = out[picture_pos] & 0x7F
            if rebase:
                next_id = (state.last_out_picture_id + 1) & _PICTURE_ID_MASK
                state.picture_id_offset = (next_id - picture_id) & _PICTURE_ID_MASK if follow else 0
            out_id = (picture_id + state.picture_id_offset) & _PICTURE_ID_MASK
            if wide:
                out[picture_pos] = _VP8_M | (out_id >> 8)
                out[picture_pos + 1] = out_id & 0xFF
            else:
                out_id &= 0x7F
                out[picture_pos] = out_id
            if rebase or (out_id - state.last_out_picture_id) & _PICTURE_ID_MASK < _PICTURE_ID_HALF:
                state.last_out_picture_id = out_id
        if tl0_pos >= 0:
            if rebase:
                next_tl0 = state.last_out_tl0 + 1
                state.tl0_offset = (next_tl0 - out[tl0_pos]) & _TL0_MASK if follow else 0
            out_tl0 = (out[tl0_pos] + state.tl0_offset) & _TL0_MASK
            out[tl0_pos] = out_tl0
            if rebase or (out_tl0 - state.last_out_tl0) & _TL0_MASK < _TL0_HALF:
                state.last_out_tl0 = out_tl0
        return bytes(out)

    def seconds_behind(self, out_timestamp: int) -> float:
        """How far a packet mapped to ``out_timestamp`` is behind the newest packet
        forwarded, in seconds of the stream's clock (0 for a newer one)."""
        behind = (self.mapping.last_out_ts - out_timestamp) & _TS_MASK
        return 0.0 if behind >= _TS_HALF else behind / self._clock_rate

    def incoming_sequence_number(self, out_sequence_number: int) -> int | None:
        """Inverse mapping, from a viewer's NACK to the producer's packet; None if
        that packet is not from the current source."""
        if self._rebase:
            return None
        state = self.mapping
        sequence_number = (out_sequence_number - state.seq_offset) & _SEQ_MASK
        if (sequence_number - state.first_in_seq) & _SEQ_MASK >= _SEQ_HALF:
            return None
        return sequence_number
