"""Per-viewer-track rewriting of RTP sequence numbers and timestamps."""

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


class Mapping:
    """A munger's state where the C loop does not forward by it: the fields of ``struct
    onair_mapping`` (``sfu.native.source``), under the same names."""

    __slots__ = (
        "first_in_seq",
        "last_out_seq",
        "last_out_time",
        "last_out_ts",
        "seq_offset",
        "ts_offset",
    )

    def __init__(self) -> None:
        self.first_in_seq = 0
        self.seq_offset = 0
        self.ts_offset = 0
        self.last_out_seq = 0
        self.last_out_ts = 0
        self.last_out_time = 0.0


class RtpMunger:
    """Maps one or more incoming RTP streams onto one continuous outgoing stream.

    Within a source the mapping is a fixed offset, so reordered and retransmitted
    packets keep their place. When the source changes (a publisher reconnects and
    its new stream has another SSRC, sequence space and clock origin), the next
    packet is re-based right after the last one sent: the sequence number
    continues by one and the timestamp advances by the wall-clock time elapsed,
    so the viewer's decoder sees one stream (as LiveKit's RTPMunger does).

    Its state is ``mapping``: with ``native`` (where the C loop is built) a ``struct
    onair_mapping`` (``sfu.native``), which the C loop maps by while it forwards the
    stream and Python reads and writes in place otherwise (between them nothing is copied),
    else a ``Mapping``. The C loop maps as ``map`` does past a re-base (``forward.c`` holds
    that twin; tests/sfu/test_native.py runs both on the same packets); re-bases are
    Python's alone.
    """

    __slots__ = ("_clock_rate", "_rebase", "_started", "mapping", "native")

    def __init__(self, clock_rate: int, *, native: bool = False) -> None:
        # ``mapping`` is a struct onair_mapping (asked for, and the C loop is built)
        self.native = native and sfu_native.available()
        self._clock_rate = clock_rate
        self._rebase = True
        self._started = False  # a packet was mapped: a re-base continues from it
        self.mapping: Any = sfu_native.new_mapping() if self.native else Mapping()
        # a random origin, as a fresh RTP stream would have (lower half of the
        # sequence space, to stay away from an early wrap)
        self.mapping.last_out_seq = random.randrange(_SEQ_HALF)
        self.mapping.last_out_ts = random.getrandbits(32)

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
