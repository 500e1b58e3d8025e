"""A viewer's available bandwidth, estimated from its own feedback.

Browsers that watch through the SFU negotiate no transport-wide congestion control with
aiortc, so the SFU has what LiveKit, mediasoup and Galène fall back on without it: the
viewer's REMB (Chromium's receive-side, delay-based estimate, ``goog-remb``) and the loss
fraction of its receiver reports. One ``BandwidthEstimator`` serves one viewer: its audio
and video share a transport and a link, so both count against the one estimate.

The rules:

- loss, as Google congestion control's loss-based controller, over windows of at least
  ``loss_window_seconds`` and ``loss_window_packets`` (the viewer's audio and video reports
  together: one report of a few dozen packets says little, and 5 % random loss would
  read as more than 10 % in one report of seven): a window losing more
  than ``loss_high`` (10 %) cuts the estimate to ``sent * (1 - loss / 2)`` (at most once per
  RTT + 300 ms, so two reports of the same burst cut once), one losing less than
  ``loss_low`` (2 %) lets it grow by ``growth_per_second`` (8 %/s), anything between holds it;
- a report of ``loss_burst_packets`` or more that lost over ``loss_burst`` (half) closes the
  window at once (random loss of a few per cent never does), and a window losing that much
  cuts to what got through, ``sent * (1 - loss)``: a link taking a fraction of what it is
  sent is found in one report, not several windows. After a cut to under half of what is
  sent, heavy-loss windows are not taken for ``loss_burst_quiet_seconds`` (neither cut nor
  count toward a pause): they report what was sent before the cut;
- growth stops at ``growth_ceiling`` times what the viewer is sent: an estimate never tested
  says nothing. Above that only a probe (``probe_succeeded``: the viewer took that much
  for a while without loss or a falling REMB) raises it;
- a REMB is an upper bound when it falls (by more than ``remb_drop``) to below what the
  viewer is sent: Chromium answers an overuse with 0.85 * its measured throughput and sends
  that at once; the estimate falls to it. A REMB that does not fall says nothing about the
  link: Chromium never announces more than 1.5 * what it receives plus 10 kbit/s and raises
  it by only about 8 %/s, and aiortc's receivers start low and climb as slowly, so it
  follows what the SFU sends; taken as a bound it would keep a viewer on its layer
  forever, or pause it for nothing. As Chromium's REMB after an overuse is 85 % of the
  throughput it measured, the link carried that throughput: ``carried`` says so, and a
  viewer is not stepped down off a layer it carried (``sfu.layers``) for a delay spike
  alone (a keyframe burst through a link that takes the layer's steady rate);
- ``background_loss``, the mean loss of the last ``background_loss_windows`` windows, tells
  a link that drops packets whatever it is sent (radio, a lossy hop), as libwebrtc's
  loss-based estimator models a link's inherent loss: a window cuts the estimate only when it
  loses more than ``loss_high`` above it (the background counted up to ``loss_high``), so
  that 5 % random loss, whose one-second windows read 2 to 12 %, does not step the viewer
  down every few seconds for losses a lower layer would have as well; and at ``loss_low`` or
  more, a NACK during a probe is no sign that the probe overflowed the link (``sfu.
  quality``), the probe's queueing delay is.

``sent`` is the viewer's measured send rate (media, retransmissions and probes together),
given by ``sent``. Times are ``time.monotonic()`` seconds; rates bits per second.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class EstimatorSettings:
    """See the module's docstring. ``initial_bps`` is the estimate before any feedback:
    high enough for a new viewer to start on the top layer (an unconstrained viewer keeps
    it; a constrained one steps down on its first report)."""

    initial_bps: float = 5_000_000.0
    min_bps: float = 20_000.0
    loss_high: float = 0.10
    loss_low: float = 0.02
    growth_per_second: float = 0.08
    growth_ceiling: float = 1.5
    remb_follows: float = 0.95
    remb_drop: float = 0.03
    remb_overuse_factor: float = 0.85
    decrease_interval_seconds: float = 0.3
    loss_window_seconds: float = 1.0
    loss_window_packets: int = 50
    loss_burst: float = 0.5
    loss_burst_packets: int = 20
    loss_burst_quiet_seconds: float = 2.0
    probe_loss_ignored_seconds: float = 1.5
    probe_delay_seconds: float = 0.02
    background_loss_windows: int = 5


class BandwidthEstimator:
    """One viewer's estimate: feed it ``sent``, ``on_remb`` and ``on_report``; read
    ``estimate``. ``last_decrease_at``, ``last_remb_fall_at`` (a falling REMB: the viewer
    saw its delay grow, even if what it announces is still above the estimate) and
    ``last_feedback_at`` tell a prober whether the viewer complained during its probe;
    ``last_heavy_loss_at``, whether its link drops packets."""

    def __init__(self, settings: EstimatorSettings, now: float) -> None:
        self.settings = settings
        self._estimate = settings.initial_bps
        self._probe_sent: tuple[float, float] | None = None
        # the link's rate as the last overflowing probe measured it (``on_probe_delay``)
        self._capacity: float | None = None
        self._sent = 0.0
        self._rtt = 0.0
        self._grown_at = now
        self.last_decrease_at = -math.inf
        self.last_feedback_at = -math.inf
        self.last_heavy_loss_at = -math.inf
        self.last_remb_fall_at = -math.inf
        self.last_loss_window_at = -math.inf  # when the last loss window was read
        self.last_remb_at = -math.inf
        self.last_probe_overflow_at = -math.inf
        self.last_probe_delay_at = -math.inf  # when a probe's queueing delay was learnt
        self._burst_hold_until = -math.inf
        self._loss_ignored_until = -math.inf
        self.heavy_loss_windows = 0  # consecutive windows losing more than loss_high
        self._reported: dict[int, tuple[int, int]] = {}  # by SSRC: highest seq, lost
        self._window_start = now
        self._window_expected = 0
        self._window_lost = 0
        self.remb: float | None = None
        self.loss = 0.0
        self._losses: deque[float] = deque(maxlen=settings.background_loss_windows)
        self._from_remb = False  # the estimate is a falling REMB's (nothing changed it since)

    @property
    def estimate(self) -> float:
        return self._estimate

    @property
    def carried(self) -> float:
        """What the link is known to carry: the estimate, or, while the estimate is a
        falling REMB's, the throughput the viewer measured (see the module's docstring)."""
        if self._from_remb:
            return self._estimate / self.settings.remb_overuse_factor
        return self._estimate

    @property
    def last_complaint_at(self) -> float:
        """When the viewer last said its link took less than it was sent: a decrease, or
        a REMB that fell."""
        return max(self.last_decrease_at, self.last_remb_fall_at, self.last_probe_overflow_at)

    @property
    def background_loss(self) -> float:
        """The mean loss fraction of the last few loss windows (see the module's
        docstring)."""
        return sum(self._losses) / len(self._losses) if self._losses else 0.0

    @property
    def sent_bps(self) -> float:
        return self._sent

    def sent(self, bps: float) -> None:
        """What the viewer is sent now (bits/s, over the last second or so)."""
        self._sent = bps

    def on_rtt(self, rtt: float | None) -> None:
        if rtt is not None:
            self._rtt = rtt

    def on_remb(self, bps: float, now: float) -> None:
        """The viewer's REMB (its receive-side estimate for the whole transport)."""
        previous, self.remb = self.remb, bps
        self.last_feedback_at = now
        self.last_remb_at = now
        settings = self.settings
        falling = previous is not None and bps < previous * (1 - settings.remb_drop)
        if falling:
            self.last_remb_fall_at = now
        if falling and bps < self._estimate and bps < settings.remb_follows * self._sent:
            self._decrease(bps, now)
            self._from_remb = True

    def on_report(self, ssrc: int, highest_sequence: int, packets_lost: int, now: float) -> None:
        """A receiver report block about one of the viewer's streams (``ssrc``): its
        extended highest sequence number and cumulative loss, counted into the current
        loss window (``on_loss`` once the window is full)."""
        self.last_feedback_at = now
        previous = self._reported.get(ssrc)
        self._reported[ssrc] = (highest_sequence, packets_lost)
        if previous is None or now < self._loss_ignored_until:
            return
        expected = highest_sequence - previous[0]
        if expected <= 0:
            return
        lost = max(0, min(packets_lost - previous[1], expected))
        self._window_expected += expected
        self._window_lost += lost
        settings = self.settings
        # a report losing half of a score of packets or more closes the window at once:
        # random loss of a few per cent does not do that, a link that takes far less does
        burst = expected >= settings.loss_burst_packets and lost > settings.loss_burst * expected
        if burst or (
            now - self._window_start >= settings.loss_window_seconds
            and self._window_expected >= settings.loss_window_packets
        ):
            self.on_loss(self._window_lost / self._window_expected, now)
            self._window_start = now
            self._window_expected = self._window_lost = 0

    def on_loss(self, fraction_lost: float, now: float) -> None:
        """The loss fraction (0 to 1) of one window of the viewer's reports."""
        settings = self.settings
        self.loss = fraction_lost
        self.last_feedback_at = now
        self.last_loss_window_at = now
        if now < self._loss_ignored_until:
            return
        heavy = settings.loss_high + min(self.background_loss, settings.loss_high)
        self._losses.append(fraction_lost)
        if fraction_lost > heavy:
            if now < self._burst_hold_until:
                # within the hold after a deep cut: about what was sent before it
                self._grown_at = now
                return
            self.heavy_loss_windows += 1
            self.last_heavy_loss_at = now
            if now - self.last_decrease_at >= settings.decrease_interval_seconds + self._rtt:
                base = min(self._estimate, self._sent) if self._sent > 0 else self._estimate
                cut = base * (1 - fraction_lost / 2)
                if fraction_lost > settings.loss_burst and self._sent > 0:
                    # what got through, not half the loss off: a link that takes a fraction
                    # of what it is sent would otherwise take several windows to be found
                    cut = min(cut, self._sent * (1 - fraction_lost))
                self._decrease(cut, now)
            self._grown_at = now
        elif fraction_lost < settings.loss_low:
            self.heavy_loss_windows = 0
            self._grow(now)
        else:
            self.heavy_loss_windows = 0
            self._grown_at = now

    def probe_succeeded(self, bps: float, now: float) -> None:
        """The viewer took ``bps`` for a probe's length without complaining."""
        self._capacity = None
        if bps > self._estimate:
            self._estimate = bps
            self._from_remb = False
        self._grown_at = now

    def probe_overflowed(self, now: float) -> None:
        """The viewer asked for a retransmission during a probe: the probe overflowed its
        link (a complaint, see ``last_complaint_at``)."""
        self.last_probe_overflow_at = now

    @property
    def capacity(self) -> float | None:
        """The link's rate as the last probe measured it, until one succeeds: it
        overflowed (``on_probe_delay``)."""
        return self._capacity

    def probe_sent(self, bps: float, seconds: float) -> None:
        """A probe sent ``bps`` (media and padding) for ``seconds``: a queueing delay
        reported for it next (``on_probe_delay``) measures the link's rate."""
        self._probe_sent = (bps, seconds)

    def on_probe_delay(self, queued: float, now: float) -> None:
        """How much longer (seconds) than the path's own the round trip of a sender report
        sent at a probe's end took: the queue the probe built at the link's bottleneck (a
        probe of ``probe_seconds`` 20 % above what the link takes builds 60 ms). More
        than ``probe_delay_seconds`` overflowed the link (a complaint): what it sent did not
        get through as fast, even if nothing was lost yet (its queue absorbed it)."""
        self.last_probe_delay_at = now
        if queued > self.settings.probe_delay_seconds:
            self.probe_overflowed(now)
            if self._probe_sent is not None:
                # what the probe sent went through in its length and its queue: the link's
                # rate, at most (what its queue dropped, or let through in a burst, would
                # make it less); the estimate is not left above it, whatever REMB says
                bps, seconds = self._probe_sent
                self._capacity = bps * seconds / (seconds + queued)
                self._estimate = min(self._estimate, self._capacity)
        self._probe_sent = None

    def probe_failed(self, bps: float, now: float) -> None:
        """A probe made the viewer complain: the cut it caused is undone, back to ``bps``
        (the estimate before the probe), as the complaint was about the probe's excess; so
        are the losses its excess causes, reported over the next moments (they would
        otherwise count toward a pause of a viewer whose link takes its layer)."""
        self._estimate = max(self._estimate, bps)
        if self._capacity is not None:
            self._estimate = min(self._estimate, self._capacity)
        self._grown_at = now
        self.ignore_loss(now + self.settings.probe_loss_ignored_seconds)

    def ignore_loss(self, until: float) -> None:
        """Take no loss from reports before ``until``: a video that resumes after a pause
        is reported on first by a report whose interval began before the pause, with the
        losses that made it pause."""
        self._loss_ignored_until = until
        self._window_expected = self._window_lost = 0
        self.heavy_loss_windows = 0

    def _grow(self, now: float) -> None:
        elapsed = min(max(now - self._grown_at, 0.0), 1.0)
        self._grown_at = now
        ceiling = self.settings.growth_ceiling * self._sent
        if self._estimate >= ceiling:
            return
        grown = self._estimate * (1 + self.settings.growth_per_second) ** elapsed
        self._estimate = min(grown, ceiling)
        self._from_remb = False

    def _decrease(self, bps: float, now: float) -> None:
        if bps < 0.5 * (min(self._estimate, self._sent) if self._sent > 0 else self._estimate):
            # to under half of what is sent: the reports of the next moments are about what
            # was sent before it, and would cut again for losses it already answered
            self._burst_hold_until = now + self.settings.loss_burst_quiet_seconds
        self._estimate = max(bps, self.settings.min_bps)
        self._from_remb = False
        self.last_decrease_at = now
        self._grown_at = now
