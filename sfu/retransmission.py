"""A viewer's retransmission budget: which of the packets it NACKs are resent.

A viewer sends as many NACKs, naming as many packets, as it likes. Answering each from the
producer's cache let one viewer that NACKed its last 1,000 packets 88 times a second make
the server resend 425 times the stream's rate (issue #17). Each down track passes a NACK's
sequence numbers through its own ``RetransmissionBudget`` first, so an over-asking viewer is
served less and no one else is touched. The rules, after mediasoup's ``RtpStreamSend`` (no
resend within one RTT of the last, nothing older than the playout horizon) and LiveKit's
sequencer (at most a few resends per packet):

- of a NACK packet, only the last ``per_nack`` sequence numbers are read: receivers list
  their losses oldest first, and the newest are those still ahead of the viewer's playout
  (an older one still missing is asked for again in the next NACK); aiortc itself parses
  no more than these (``aiortc_adapter.limit_nack_parsing``);
- a packet is not resent again within ``max(RTT, min_interval_seconds)`` of its last resend
  (or of the last time it could not be: too old, or not forwarded yet), nor more than
  ``max_resends`` times;
- a token bucket in packets and in bytes, holding at most ``burst_packets`` and
  ``burst_bytes``, earns ``share`` of what is forwarded to the viewer plus ``packets_per_second``
  and ``bytes_per_second``: retransmissions stay a fraction of the stream's rate, plus a floor
  for streams too slow to earn much (audio, a still picture);
- (checked by the down track, which knows the packet's timestamp) a packet more than
  ``max_age_seconds`` behind the newest one forwarded is not resent: it would arrive after
  the viewer's jitter buffer gave up on it.

The defaults let a viewer losing 5 % of a stream's packets get every one of them back, with
room for a burst of loss (tests/sfu/test_feedback.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RetransmissionLimits:
    """Each viewer track's retransmission budget (see the module's docstring)."""

    share: float = 0.1
    packets_per_second: float = 10.0
    bytes_per_second: float = 12_500.0
    burst_packets: int = 100
    burst_bytes: int = 125_000
    per_nack: int = 64
    min_interval_seconds: float = 0.1
    max_resends: int = 3
    max_age_seconds: float = 1.0


class RetransmissionBudget:
    """One viewer track's budget. Per NACK: ``admit`` yields the sequence numbers to resend
    now, and the caller reports each one with ``resent``, or ``missed`` if it could not;
    ``refused`` counts the sequence numbers the budget turned down."""

    __slots__ = (
        "_bytes",
        "_forwarded_bytes",
        "_forwarded_packets",
        "_interval",
        "_limits",
        "_packets",
        "_resent",
        "_updated",
        "refused",
    )

    def __init__(self, limits: RetransmissionLimits, now: float) -> None:
        self._limits = limits
        self._packets = float(limits.burst_packets)
        self._bytes = float(limits.burst_bytes)
        self._updated = now
        self._forwarded_packets = 0
        self._forwarded_bytes = 0
        self._interval = limits.min_interval_seconds
        # outgoing sequence number → (when last resent, how many times), oldest resend first
        self._resent: dict[int, tuple[float, int]] = {}
        self.refused = 0

    @property
    def limits(self) -> RetransmissionLimits:
        return self._limits

    @property
    def remembered(self) -> int:
        """How many packets' resend records it keeps (those within the age limit)."""
        return len(self._resent)

    def admit(
        self,
        sequence_numbers: Sequence[int],
        *,
        now: float,
        forwarded_packets: int,
        forwarded_bytes: int,
        rtt: float | None,
    ) -> Iterator[int]:
        """The NACKed ``sequence_numbers`` that may be resent, one at a time (the bucket is
        checked again after each ``resent``). ``forwarded_packets`` and ``forwarded_bytes``
        are the totals forwarded to the viewer so far, ``rtt`` its round-trip time in
        seconds if known."""
        limits = self._limits
        self._earn(now, forwarded_packets, forwarded_bytes)
        self._forget(now - limits.max_age_seconds)
        self._interval = max(limits.min_interval_seconds, rtt or 0.0)
        wanted = sequence_numbers[-limits.per_nack :]
        self.refused += len(sequence_numbers) - len(wanted)
        resent = self._resent
        for index, number in enumerate(wanted):
            if self._packets < 1 or self._bytes < 1:
                self.refused += len(wanted) - index
                return
            sequence_number = number & 0xFFFF  # aiortc leaves a NACK's pid + n unwrapped
            last = resent.get(sequence_number)
            if last is not None and (
                now - last[0] < self._interval or last[1] >= limits.max_resends
            ):
                self.refused += 1
                continue
            yield sequence_number

    def resent(self, sequence_number: int, size: int, now: float) -> None:
        """``sequence_number`` went out again, ``size`` bytes."""
        self._packets -= 1
        self._bytes -= size
        last = self._resent.pop(sequence_number, None)
        self._resent[sequence_number] = (now, 1 if last is None else last[1] + 1)

    def missed(self, sequence_number: int, now: float) -> None:
        """``sequence_number`` could not be resent: not asked again for one interval (it is
        no cheaper to find out twice), and not counted as a resend."""
        last = self._resent.pop(sequence_number, None)
        self._resent[sequence_number] = (now, 0 if last is None else last[1])

    def _earn(self, now: float, forwarded_packets: int, forwarded_bytes: int) -> None:
        limits = self._limits
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        packets = forwarded_packets - self._forwarded_packets
        octets = forwarded_bytes - self._forwarded_bytes
        self._forwarded_packets = forwarded_packets
        self._forwarded_bytes = forwarded_bytes
        self._packets = min(
            float(limits.burst_packets),
            self._packets + limits.share * packets + limits.packets_per_second * elapsed,
        )
        self._bytes = min(
            float(limits.burst_bytes),
            self._bytes + limits.share * octets + limits.bytes_per_second * elapsed,
        )

    def _forget(self, before: float) -> None:
        """Drop the records of resends before ``before``: those packets are now too old to
        be resent anyway, and the records stay as few as the budget allows resends."""
        resent = self._resent
        while resent:
            oldest = next(iter(resent))
            if resent[oldest][0] >= before:
                return
            del resent[oldest]
