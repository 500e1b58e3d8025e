"""A viewer's available bandwidth, estimated from its own feedback.

Browsers that watch through the SFU negotiate no transport-wide congestion control with
aiortc, so the SFU has what LiveKit, mediasoup and Galène fall back on without it: the
viewer's REMB (Chromium's receive-side, delay-based estimate, ``goog-remb``) and the loss
fraction of its receiver reports. One ``BandwidthEstimator`` serves one viewer: its audio
and video share a transport and a link, so both count against the one estimate.

The rules:

- loss, as Google congestion control's loss-based controller: a receiver report losing more
  than ``loss_high`` (10 %) cuts the estimate to ``sent * (1 - loss / 2)`` (at most once per
  RTT + 300 ms, so two reports of the same burst cut once), one losing less than
  ``loss_low`` (2 %) lets it grow by ``growth_per_second`` (8 %/s), anything between holds it;
- growth stops at ``growth_ceiling`` times what the viewer is sent: an estimate never tested
  says nothing. Above that only a probe (``probe_succeeded``: the viewer took that much
  for a while without loss or a falling REMB) raises it;
- the REMB is an upper bound when it is below what the viewer is sent (Chromium answers an
  overuse with 0.85 * its measured throughput): then the estimate falls to it at once. A
  REMB above ``remb_follows`` * sent says nothing about the link: Chromium never announces
  more than 1.5 * what it receives plus 10 kbit/s, and raises it by only ≈ 8 %/s, so it
  follows what the SFU sends; taken as a bound it would keep a viewer on its layer forever.

``sent`` is the viewer's measured send rate (media, retransmissions and probes together),
given by ``sent``. Times are ``time.monotonic()`` seconds; rates bits per second.
"""

from __future__ import annotations

import math
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
    decrease_interval_seconds: float = 0.3


class BandwidthEstimator:
    """One viewer's estimate: feed it ``sent``, ``on_remb`` and ``on_loss``; read
    ``estimate``. ``last_decrease_at`` and ``last_feedback_at`` tell a prober whether the
    viewer complained during its probe."""

    def __init__(self, settings: EstimatorSettings, now: float) -> None:
        self.settings = settings
        self._estimate = settings.initial_bps
        self._sent = 0.0
        self._rtt = 0.0
        self._grown_at = now
        self.last_decrease_at = -math.inf
        self.last_feedback_at = -math.inf
        self.remb: float | None = None
        self.loss = 0.0

    @property
    def estimate(self) -> float:
        return self._estimate

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
        self.remb = bps
        self.last_feedback_at = now
        if bps < self._estimate and bps < self.settings.remb_follows * self._sent:
            self._decrease(bps, now)

    def on_loss(self, fraction_lost: float, now: float) -> None:
        """A receiver report's loss fraction (0 to 1) for one of the viewer's streams."""
        settings = self.settings
        self.loss = fraction_lost
        self.last_feedback_at = now
        if fraction_lost > settings.loss_high:
            if now - self.last_decrease_at >= settings.decrease_interval_seconds + self._rtt:
                base = min(self._estimate, self._sent) if self._sent > 0 else self._estimate
                self._decrease(base * (1 - fraction_lost / 2), now)
            self._grown_at = now
        elif fraction_lost < settings.loss_low:
            self._grow(now)
        else:
            self._grown_at = now

    def probe_succeeded(self, bps: float, now: float) -> None:
        """The viewer took ``bps`` for a probe's length without complaining."""
        if bps > self._estimate:
            self._estimate = bps
        self._grown_at = now

    def probe_failed(self, bps: float, now: float) -> None:
        """A probe made the viewer complain: the cut it caused is undone, back to ``bps``
        (the estimate before the probe), as the complaint was about the probe's excess."""
        self._estimate = max(self._estimate, bps)
        self._grown_at = now

    def _grow(self, now: float) -> None:
        elapsed = min(max(now - self._grown_at, 0.0), 1.0)
        self._grown_at = now
        ceiling = self.settings.growth_ceiling * self._sent
        if self._estimate >= ceiling:
            return
        grown = self._estimate * (1 + self.settings.growth_per_second) ** elapsed
        self._estimate = min(grown, ceiling)

    def _decrease(self, bps: float, now: float) -> None:
        self._estimate = max(bps, self.settings.min_bps)
        self.last_decrease_at = now
        self._grown_at = now
