"""Which layer of a simulcast video a viewer is sent: ``LayerSelector``.

Given the layers' measured bitrates (lowest quality first), the viewer's bandwidth estimate
(``sfu.bandwidth``), what its audio takes and its own choice (Auto, or a fixed layer), the
selector names the layer to send, or none (video paused: audio goes on), and when to probe.

- Down, fast: on the first estimate below what the current layer needs (its bitrate plus
  the audio's; after a falling REMB, below what the link is known to carry: ``sfu.
  bandwidth``), the highest layer the estimate fits is chosen. If none does, the lowest is; the
  video pauses only from the lowest layer, once the link also lost more than the
  estimator's ``loss_high`` in ``pause_loss_windows`` loss windows in a row, the last
  within ``pause_loss_seconds``: a link that takes less than the lowest layer drops what
  does not fit, whereas a delay-based complaint alone (a REMB), one unlucky window, or the
  losses of a higher layer's last packets (``sfu.quality`` has the estimator ignore the
  loss reported just after a step down) can be passing.
- A layer stepped down from after ``fall_hold_after_seconds`` on it is not probed again
  for ``fall_hold_seconds`` (a step down sooner is about the step before it: the burst
  of a layer the link did not take, not this one's own rate): a link that
  carries a layer only just (a keyframe burst, or the next probe through its queue, tips
  it over) would otherwise have the viewer switch back and forth, each switch a wait for
  a keyframe. The layers below it are probed as usual (a paused viewer too, toward the
  lowest).
- Up, slowly and only after a probe: a viewer's REMB does not rise much above what it
  receives, so an estimate above the next layer's needs is only learnt by sending that
  much. Once the estimate has been steady (no decrease for ``steady_seconds``) the selector
  asks for a probe (extra packets sent to the viewer, see ``sfu.quality``) for
  ``probe_seconds`` toward the highest layer it may step up to (its rate plus
  ``up_margin`` and ``probe_over``), but never more than ``probe_ratio`` times the
  estimate (``probe_ratio_measured`` while the last failed probe's queue measured the
  link's rate, ``probe_ratio_after_success`` right after one succeeded), so that a probe
  the link cannot take overflows it briefly and by little (and long enough that a link's
  burst allowance does not hide it). The probe failed if the
  queue it built at the link's bottleneck
  delayed the sender report sent at its end by more than the estimator's
  ``probe_delay_seconds`` (a link's queue takes a probe it cannot carry without a loss for
  a while: a probe of a flowing video whose report went unanswered is no verdict, and is
  tried again), or if feedback complained during it and ``probe_settle_seconds`` after (a loss
  window that cut the estimate, a falling REMB, a NACK); else it succeeded and the
  estimate is raised to its rate: the layer steps up as far as that is enough, and the
  next probe, higher, follows at once. A failed probe doubles the wait before the next,
  from ``probe_backoff_seconds`` up to ``probe_backoff_max_seconds``; a paused viewer is
  probed toward the lowest layer only (its audio goes through the same link: a probe far
  above it would drop the audio), the first time ``paused_probe_seconds`` after it paused,
  and its sender report, as no video is sent, tells the present (``sfu.quality``).
- A fixed choice is sent whatever the estimate (the viewer asked for it); a fixed layer
  that is not sent by the publisher (inactive) falls back to the nearest active one below,
  else above.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sfu.bandwidth import BandwidthEstimator


@dataclass(frozen=True)
class SelectorSettings:
    """See the module's docstring."""

    up_margin: float = 0.15
    # a probe goes this much (of the need) above what a step up asks for: layers' bitrates
    # vary, and a probe that only just reached the step's need would leave it just short
    probe_over: float = 0.05
    steady_seconds: float = 2.0
    probe_seconds: float = 0.5
    probe_settle_seconds: float = 0.6
    # how long a probe's verdict waits for its queueing delay (``BandwidthEstimator.
    # on_probe_delay``: the answer to a sender report sent at its end; a receiver reports
    # about once a second) before it is judged by loss and REMB alone
    probe_delay_wait_seconds: float = 1.5
    # how long a probe's verdict may wait for feedback: a paused viewer's receiver reports
    # come with its audio's, which Chromium sends every 5 s
    probe_feedback_seconds: float = 6.0
    # how far above the estimate a probe goes: its queue at a link that cannot take it
    # grows by (ratio - 1) times ``probe_seconds``; less where the last probe measured the
    # link's rate (it overflowed: the next had better not drop media), more right after a
    # probe succeeded (as GCC's probing doubles), so a recovered link is found in few probes
    probe_ratio: float = 1.5
    probe_ratio_measured: float = 1.3
    probe_ratio_after_success: float = 2.0
    probe_backoff_seconds: float = 1.0
    probe_backoff_max_seconds: float = 4.0
    paused_probe_seconds: float = 3.0
    fall_hold_seconds: float = 20.0
    fall_hold_after_seconds: float = 2.0
    pause_loss_seconds: float = 2.0
    pause_loss_windows: int = 2


@dataclass(frozen=True)
class LayerState:
    """One layer as the selector sees it: its bitrate (bits/s, measured) and whether the
    publisher sends it."""

    bitrate: float
    active: bool


@dataclass(frozen=True)
class Probe:
    """Send the viewer ``rate`` bits/s in all (media and probe packets) until ``until``."""

    rate: float
    started: float
    until: float
    layer: int
    estimate_before: float


@dataclass(frozen=True)
class Selection:
    """``layer``: the index to send, None to pause the video. ``probe``: the probe under
    way, if any."""

    layer: int | None
    probe: Probe | None


AUTO: int | None = None


class LayerSelector:
    """One viewer's layer choice for one video track (see the module's docstring)."""

    def __init__(self, settings: SelectorSettings, now: float) -> None:
        self.settings = settings
        self.layer: int | None = None  # what was chosen last; None: paused or not yet
        self.started = False
        self._probe: Probe | None = None
        self._next_probe_at = now
        self._backoff = settings.probe_backoff_seconds
        self._held_from: tuple[int, float] | None = None  # a layer stepped down from, until
        self._sent_since: tuple[int | None, float] = (None, now)  # the layer sent, since
        self._succeeded = False  # the last probe succeeded

    @property
    def probe(self) -> Probe | None:
        return self._probe

    def select(
        self,
        now: float,
        estimator: BandwidthEstimator,
        layers: Sequence[LayerState],
        audio_bps: float,
        manual: int | None = AUTO,
    ) -> Selection:
        """The layer to send now (and the probe under way), from the viewer's estimate."""
        active = [i for i, layer in enumerate(layers) if layer.active]
        if not active:
            # nothing is sent by the publisher: keep what there is, it comes back
            return Selection(self.layer, None)
        if manual is not None:
            self._probe = None
            self._choose(_nearest_active(manual, active), now)
            self.started = True
            return Selection(self.layer, None)

        def need(index: int) -> float:
            return layers[index].bitrate + audio_bps

        estimate = estimator.estimate
        if not self.started:
            self.started = True
            self._choose(self._fitting(now, estimator, active, need, None), now)
            self._next_probe_at = now + self._probe_wait()
            return Selection(self.layer, None)
        current = self.layer
        if current != self._sent_since[0]:
            self._sent_since = (current, now)
        probe = self._probe
        if probe is not None and estimator.last_complaint_at >= probe.started:
            # the probe's own excess caused the complaint: back to where it started (a
            # link that really got worse meanwhile cuts it again on its next report)
            estimator.probe_failed(probe.estimate_before, now)
            self._fail_probe(now)
            probe = None
            estimate = estimator.estimate
        chosen = current
        if current is not None and (current not in active or need(current) > estimator.carried):
            # step down at once (or off an inactive layer to what fits); on the lowest
            # already, it stays there (or pauses) and goes on probing
            chosen = self._fitting(now, estimator, active, need, current)
        if chosen != current:
            if (
                current in active
                and chosen is not None
                and current is not None
                and chosen < current
                and now - self._sent_since[1] >= self.settings.fall_hold_after_seconds
            ):
                self._held_from = (current, now + self.settings.fall_hold_seconds)
            self._choose(chosen, now)
            self._fail_probe(now)
            return Selection(self.layer, None)
        if probe is not None:
            settle = probe.until + self.settings.probe_settle_seconds
            if now < settle:
                return Selection(self.layer, probe if now < probe.until else None)
            delay_known = estimator.last_probe_delay_at >= probe.until
            if not delay_known:
                if now < probe.until + self.settings.probe_delay_wait_seconds:
                    return Selection(self.layer, None)  # waits for the probe's delay
                if current is not None:
                    # a flowing video's probe is judged by its queueing delay: a link's
                    # queue takes a probe it cannot carry without a loss for a while, so no
                    # loss says nothing; no answer (aiortc's own report, sent meanwhile, was
                    # answered instead) is no verdict: another probe, after the same wait
                    self._probe = None
                    self._next_probe_at = now + self._backoff
                    return Selection(self.layer, None)
                if estimator.last_feedback_at < probe.until or (
                    estimator.last_remb_at < probe.until
                    and estimator.last_loss_window_at < probe.until
                ):
                    # no verdict yet: a REMB, or a loss window that holds the probe's end
                    # (its padding is counted in the retransmission stream's reports)
                    if now >= probe.until + self.settings.probe_feedback_seconds:
                        self._fail_probe(now)  # no feedback: nothing learnt
                    return Selection(self.layer, None)
            # the viewer took it: the estimate is raised, and the layer steps up if that is
            # enough, else the next probe, higher, may follow at once
            self._probe = None
            estimator.probe_succeeded(probe.rate, now)
            self._succeeded = True
            self._backoff = self.settings.probe_backoff_seconds
            self._next_probe_at = now
            estimate = estimator.estimate
        upper = [i for i in active if current is None or i > current]
        held = self._held_from
        if held is not None and now < held[1]:
            upper = [i for i in upper if i < held[0]]
        if not upper:
            return Selection(self.layer, None)
        margin = 1 + self.settings.up_margin
        if need(upper[0]) * margin <= estimate:
            # the estimate says so already (a probe raised it, or feedback grew it)
            self._choose(max(i for i in upper if need(i) * margin <= estimate), now)
            return Selection(self.layer, None)
        # toward the highest layer it may go to, as far as ``probe_ratio`` lets it: a link
        # that recovered is found in as few probes as it takes, not one per layer (a paused
        # viewer: toward the lowest, see the module's docstring)
        target = upper[0] if current is None else upper[-1]
        steady = now - estimator.last_decrease_at >= self.settings.steady_seconds
        if now >= self._next_probe_at and (steady or current is None) and estimate > 0:
            settings = self.settings
            if self._succeeded:
                ratio = settings.probe_ratio_after_success
            elif estimator.capacity is not None:
                ratio = settings.probe_ratio_measured
            else:
                ratio = settings.probe_ratio
            self._probe = Probe(
                rate=min(need(target) * (margin + settings.probe_over), ratio * estimate),
                started=now,
                until=now + self.settings.probe_seconds,
                layer=target,
                estimate_before=estimate,
            )
            return Selection(self.layer, self._probe)
        return Selection(self.layer, None)

    def _fitting(
        self,
        now: float,
        estimator: BandwidthEstimator,
        active: list[int],
        need: Callable[[int], float],
        current: int | None,
    ) -> int | None:
        """The highest active layer the estimate fits; if none: None (pause) when the
        lowest is sent (``current``) and the link keeps losing packets, else the lowest."""
        fitting = [i for i in active if need(i) <= estimator.estimate]
        if fitting:
            return fitting[-1]
        settings = self.settings
        if (
            current == active[0]
            and estimator.heavy_loss_windows >= settings.pause_loss_windows
            and now - estimator.last_heavy_loss_at <= settings.pause_loss_seconds
        ):
            return None
        return active[0]

    def _choose(self, layer: int | None, now: float) -> None:
        if layer != self.layer:
            self._sent_since = (layer, now)
        self.layer = layer

    def _probe_wait(self) -> float:
        return self.settings.paused_probe_seconds if self.layer is None else self._backoff

    def _fail_probe(self, now: float) -> None:
        self._succeeded = False
        if self._probe is not None:
            self._probe = None
            self._backoff = min(self._backoff * 2, self.settings.probe_backoff_max_seconds)
        self._next_probe_at = now + self._probe_wait()


def _nearest_active(layer: int, active: list[int]) -> int:
    below = [i for i in active if i <= layer]
    return below[-1] if below else active[0]
