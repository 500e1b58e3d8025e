"""Per-consumer rewriting of RTP sequence numbers and timestamps."""

from __future__ import annotations

import random
from typing import Any

_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF
_SEQ_HALF = 0x8000
_TS_HALF = 0x80000000
# how far behind the newest packet a late (reordered, retransmitted) packet is still mapped
_SEQ_WINDOW = 0x4000
# what the C loop (sfu.native) keeps of a munger while it forwards
_MAPPING = (
    "first_in_seq",
    "seq_offset",
    "ts_offset",
    "last_out_seq",
    "last_out_ts",
    "last_out_time",
)


class RtpMunger:
    """Maps one or more incoming RTP streams onto one continuous outgoing stream.

    Within a source the mapping is a fixed offset, so reordered and retransmitted
    packets keep their place. When the source changes (a publisher reconnects and
    its new stream has another SSRC, sequence space and clock origin), the next
    packet is re-based right after the last one sent: the sequence number
    continues by one and the timestamp advances by the wall-clock time elapsed,
    so the viewer's decoder sees one stream (as LiveKit's RTPMunger does).
    """

    __slots__ = (
        "_clock_rate",
        "_first_in_seq",
        "_last_out_seq",
        "_last_out_time",
        "_last_out_ts",
        "_rebase",
        "_seq_offset",
        "_ts_offset",
    )

    def __init__(self, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self._rebase = True
        self._first_in_seq = 0
        self._seq_offset = 0
        self._ts_offset = 0
        # a random origin, as a fresh RTP stream would have (lower half of the
        # sequence space, to stay away from an early wrap)
        self._last_out_seq = random.randrange(_SEQ_HALF)
        self._last_out_ts = random.getrandbits(32)
        self._last_out_time: float | None = None

    @property
    def rebasing(self) -> bool:
        """The next packet re-bases the mapping (see ``switch_source``)."""
        return self._rebase

    def save(self, state: Any) -> None:
        """Copy the mapping into ``state`` (a ``struct onair_target`` of ``sfu.native``),
        whose C loop maps by the same rules; not while a re-base is pending."""
        assert not self._rebase
        for name in _MAPPING:
            setattr(state, name, getattr(self, f"_{name}"))

    def load(self, state: Any) -> None:
        """Take the mapping back from ``state`` after the C loop has used it."""
        for name in _MAPPING:
            setattr(self, f"_{name}", getattr(state, name))

    def switch_source(self) -> None:
        """The next packet comes from a new stream: re-base on it."""
        self._rebase = True

    def map(self, sequence_number: int, timestamp: int, now: float) -> tuple[int, int] | None:
        """Outgoing (sequence number, timestamp) of a packet that arrived at ``now``
        (``time.monotonic()``), or None for a packet older than the current
        source's first forwarded packet (or than 16384 packets before its newest)."""
        if self._rebase:
            self._rebase = False
            if self._last_out_time is None:
                step = 0
            else:
                step = max(1, int((now - self._last_out_time) * self._clock_rate))
            out_seq = (self._last_out_seq + 1) & _SEQ_MASK
            out_ts = (self._last_out_ts + step) & _TS_MASK
            self._first_in_seq = sequence_number
            self._seq_offset = (out_seq - sequence_number) & _SEQ_MASK
            self._ts_offset = (out_ts - timestamp) & _TS_MASK
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_out_time = now
            return out_seq, out_ts

        since_first = (sequence_number - self._first_in_seq) & _SEQ_MASK
        if since_first >= _SEQ_HALF:
            return None
        if since_first > _SEQ_WINDOW:  # the window follows the stream round its 16 bits
            self._first_in_seq = (sequence_number - _SEQ_WINDOW) & _SEQ_MASK
        out_seq = (sequence_number + self._seq_offset) & _SEQ_MASK
        out_ts = (timestamp + self._ts_offset) & _TS_MASK
        if (out_seq - self._last_out_seq) & _SEQ_MASK < _SEQ_HALF:
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_out_time = now
        return out_seq, out_ts

    def seconds_behind(self, out_timestamp: int) -> float:
        """How far a packet mapped to ``out_timestamp`` is behind the newest packet
        forwarded, in seconds of the stream's clock (0 for a newer one)."""
        behind = (self._last_out_ts - out_timestamp) & _TS_MASK
        return 0.0 if behind >= _TS_HALF else behind / self._clock_rate

    def incoming_sequence_number(self, out_sequence_number: int) -> int | None:
        """Inverse mapping, from a viewer's NACK to the producer's packet; None if
        that packet is not from the current source."""
        if self._rebase:
            return None
        sequence_number = (out_sequence_number - self._seq_offset) & _SEQ_MASK
        if (sequence_number - self._first_in_seq) & _SEQ_MASK >= _SEQ_HALF:
            return None
        return sequence_number
