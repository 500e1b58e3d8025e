"""A viewer's picture quality: its bandwidth estimate, its video layer and its probes.

``ViewerQuality`` is one viewer's: it reads the viewer's feedback (REMB, receiver reports:
``sfu.viewer.SendSlot`` hands them over) into a ``sfu.bandwidth.BandwidthEstimator``, and
every ``interval_seconds`` measures what the viewer is sent, asks its ``sfu.layers.
LayerSelector`` which layer of the video track to send, and has the video ``DownTrack``
switch to it (on a keyframe of that layer), pause, resume or probe. A step down does not
wait for the next turn: feedback that lowers the estimate is acted on when it arrives.
What it does is reported as ``ViewerQualityChanged``.

A probe sends padding on the video track's retransmission stream (``DownTrack.
send_probe``) every ``PROBE_TICK_SECONDS``, so that the viewer receives the probe's rate in
all; a sender report sent at its end (``aiortc_adapter.send_sender_report``; while the
video is paused, one telling the present) comes back late by the queue the probe built
at the link's bottleneck, which, with the viewer's REMB and loss, tells the selector whether
the next layer fits. A
probe stops at its first NACK (it overflows the link's queue: every packet more is dropped,
media too; it fails), unless the link loses packets anyway (``BandwidthEstimator.
background_loss``), and as soon as the selector has failed it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiortc.rtp import AnyRtcpPacket, RtcpRrPacket, RtcpSrPacket

from sfu import aiortc_adapter
from sfu.bandwidth import BandwidthEstimator, EstimatorSettings
from sfu.downtrack import DownTrack
from sfu.events import SfuEvent, ViewerQualityChanged
from sfu.layers import LayerSelector, LayerState, Probe, Selection, SelectorSettings
from sfu.producer import Producer

logger = logging.getLogger(__name__)

# How often a probe's padding is sent while it runs.
PROBE_TICK_SECONDS = 0.02
# What the viewer's send rate is measured over.
RATE_WINDOW_SECONDS = 1.0
# What a layer's bitrate, as the selector weighs it, is measured over: long enough that the
# keyframes every layer sends at once when any viewer asks one layer for a keyframe (a
# simulcast publisher answers a PLI on every layer) do not read as the layer's rate, and
# step down viewers who can take its steady rate.
LAYER_RATE_WINDOW_SECONDS = 3.0
# How long after a resume receiver reports' losses are not taken (``BandwidthEstimator.
# ignore_loss``): about one report interval (Chromium's and aiortc's: 0.5 to 1.5 s).
RESUME_LOSS_IGNORED_SECONDS = 1.5
# How long a round trip counts toward the path's own (``ViewerQuality._base_rtt``): a path
# whose round trip grew for good (a new route) is taken as it is after this long.
BASE_RTT_SECONDS = 30.0
# Every video codec's RTP clock (RFC 3551): a paused video's probe sender report tells the
# present at it (``aiortc_adapter.send_sender_report``).
VIDEO_CLOCK_RATE = 90_000
# A layer with no packet for this long is not sent by the publisher (it turned it off).
LAYER_ACTIVE_SECONDS = 1.0


@dataclass(frozen=True)
class QualityOptions:
    """Each viewer's layer choice (``RouterOptions.quality``). ``auto_layers`` off: no
    estimation, a viewer gets the top layer the publisher sends (or the one it chose) and is
    never paused. ``interval_seconds``: how often the choice is made again."""

    auto_layers: bool = True
    interval_seconds: float = 0.5
    estimator: EstimatorSettings = field(default_factory=EstimatorSettings)
    selector: SelectorSettings = field(default_factory=SelectorSettings)


class LayeredTrack(Protocol):
    """A published track's layers, lowest quality first (``sfu.track.PublishedTrack``)."""

    def layers_at(self, now: float) -> tuple[Producer, ...]: ...


class _Rate:
    """Bits per second of a growing byte counter, over the last ``window`` seconds."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    @property
    def span(self) -> float:
        """How many seconds the rate is measured over (less than ``window`` at first)."""
        return self._samples[-1][0] - self._samples[0][0] if self._samples else 0.0

    def update(self, now: float, total_bytes: int) -> float:
        samples = self._samples
        samples.append((now, total_bytes))
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        first_at, first_bytes = samples[0]
        elapsed = now - first_at
        return (total_bytes - first_bytes) * 8 / elapsed if elapsed > 0 else 0.0


class ViewerQuality:
    """One viewer's estimate and layer choice (see the module's docstring)."""

    def __init__(
        self,
        *,
        router_id: str,
        viewer_id: str,
        options: QualityOptions,
        emit: Callable[[SfuEvent], None],
        down_tracks: Callable[[], Sequence[DownTrack]],
        track_of: Callable[[Producer], LayeredTrack | None],
    ) -> None:
        now = time.monotonic()
        self.router_id = router_id
        self.viewer_id = viewer_id
        self.options = options
        self.estimator = BandwidthEstimator(options.estimator, now)
        self.selector = LayerSelector(options.selector, now)
        self.choice: int | None = None  # the viewer's own choice of layer; None: Auto
        self._emit = emit
        self._down_tracks = down_tracks
        self._track_of = track_of
        self._sent = _Rate()
        self._audio = _Rate()
        self._audio_bps = 0.0
        self._layer_rates: dict[Producer, tuple[_Rate, float]] = {}  # see ``_layer_bitrate``
        self._timer: asyncio.TimerHandle | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._last_remb: AnyRtcpPacket | None = None
        self._reported: ViewerQualityChanged | None = None
        self._switch: asyncio.Task[None] | None = None
        self._probing: Probe | None = None  # the probe whose padding is (or was) sent
        # round trips measured, (time.monotonic(), seconds), over the last
        # ``BASE_RTT_SECONDS``: the shortest is the path's own (see ``_base_rtt``)
        self._rtts: deque[tuple[float, float]] = deque()
        # the sender report sent at its end: (its lsr, time.time() when sent)
        self._probe_report: tuple[int, float] | None = None
        self.closed = False

    def start(self) -> None:
        """Choose every ``interval_seconds`` from now on (the viewer is connected)."""
        if self._timer is None and not self.closed:
            self._timer = asyncio.get_running_loop().call_later(0, self._turn)

    def close(self) -> None:
        self.closed = True
        for timer in (self._timer, self._probe_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._probe_timer = None
        if self._switch is not None:
            self._switch.cancel()

    def choose(self, layer: int | None) -> None:
        """The viewer's own choice: a layer (its index, lowest quality first) whatever its
        estimate, or None for Auto."""
        self.choice = layer
        self._decide(time.monotonic())

    def feedback(self, packet: AnyRtcpPacket, ssrcs: tuple[int, int], rtt: float | None) -> None:
        """RTCP from the viewer about one of its streams (see ``SendSlot``): ``ssrcs``,
        its media and retransmission SSRCs. The retransmission stream's reports count in
        the loss windows too: a probe's padding travels there, and while the video is
        paused it is all that does."""
        if not self.options.auto_layers:
            return
        now = time.monotonic()
        estimator = self.estimator
        before = estimator.last_decrease_at
        bitrate = aiortc_adapter.remb_bitrate(packet)
        if bitrate is not None:
            if packet is self._last_remb:
                return  # the same REMB, handed to the viewer's other sender too
            self._last_remb = packet
            estimator.on_remb(bitrate, now)
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            estimator.on_rtt(rtt)
            for report in packet.reports:
                if report.ssrc in ssrcs:
                    estimator.on_report(
                        report.ssrc, report.highest_sequence, report.packets_lost, now
                    )
                    if self._probe_delay(report.ssrc, report.lsr, report.dlsr, now):
                        self._decide(now)  # the probe's verdict
        if estimator.last_decrease_at != before:
            self._decide(now)  # step down now, not at the next turn

    def _probe_delay(self, ssrc: int, lsr: int, dlsr: int, now: float) -> bool:
        """Whether a report block (``ssrc``, ``lsr``, ``dlsr``) answers the sender report
        sent at a probe's end, whose round trip, less the one before the probe, is the
        probe's queueing delay (``BandwidthEstimator.on_probe_delay``)."""
        sent = self._probe_report
        if sent is None or lsr != sent[0] or not dlsr:
            return False
        base = self._base_rtt(now)
        if base is None:
            return False
        video = self._video()
        # (libwebrtc echoes the one ``lsr`` in the block of every stream it reports on: the
        # retransmission stream's, that the probe's padding went on, is there while the
        # video is paused too)
        if video is None or ssrc not in aiortc_adapter.sender_ssrcs(video[0].sender):
            return False
        self._probe_report = None
        # the viewer answers the last report it got: the sender's own loop repeats the
        # probe's while the video is paused (``aiortc_adapter.sender_report_sent_at``), and
        # a repeat sent before the viewer got its last report (it answers with the time
        # since) is the one answered
        answered_by = time.time() - dlsr / 65536
        sent_at = sent[1]
        again = aiortc_adapter.sender_report_sent_at(video[0].sender, lsr)
        if again is not None and sent_at < again <= answered_by:
            sent_at = again
        rtt = answered_by - sent_at
        self.estimator.on_probe_delay(rtt - base, now)
        self._rtts.append((now, rtt))
        return True

    def _base_rtt(self, now: float) -> float | None:
        """The shortest round trip of the last ``BASE_RTT_SECONDS`` (aiortc's, smoothed, at
        each probe's start, and those of the probes' sender reports): the path's own, with
        no queue at the link's bottleneck; None before any."""
        rtts = self._rtts
        while rtts and now - rtts[0][0] > BASE_RTT_SECONDS:
            rtts.popleft()
        return min(rtt for _, rtt in rtts) if rtts else None

    def _turn(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = time.monotonic()
        total = 0
        for down_track in self._down_tracks():
            sent = down_track.bytes_sent + down_track.probe_bytes
            total += sent
            if down_track.kind == "audio":
                self._audio_bps = self._audio.update(now, sent)
        self.estimator.sent(self._sent.update(now, total))
        found = self._video()
        self._measure_layers(now, found[1] if found is not None else ())
        self._decide(now, found)
        self._timer = asyncio.get_running_loop().call_later(
            self.options.interval_seconds, self._turn
        )

    def _video(self) -> tuple[DownTrack, tuple[Producer, ...]] | None:
        video = next((t for t in self._down_tracks() if t.kind == "video"), None)
        if video is None or video.closed:
            return None
        track = self._track_of(video.producer)
        if track is None:
            return None
        return video, track.layers_at(time.monotonic())

    def _measure_layers(self, now: float, layers: tuple[Producer, ...]) -> None:
        rates = self._layer_rates
        for gone in [layer for layer in rates if layer not in layers]:
            del rates[gone]
        for layer in layers:
            rate = rates[layer][0] if layer in rates else _Rate(LAYER_RATE_WINDOW_SECONDS)
            rates[layer] = (rate, rate.update(now, layer.bytes_received))

    def _layer_bitrate(self, layer: Producer, now: float) -> float:
        """``layer``'s bitrate over ``LAYER_RATE_WINDOW_SECONDS``; over its last second
        while there is not a second of it yet."""
        measured = self._layer_rates.get(layer)
        if measured is None or measured[0].span < 1.0:
            return layer.bitrate(now)
        return measured[1]

    def _decide(
        self, now: float, found: tuple[DownTrack, tuple[Producer, ...]] | None = None
    ) -> None:
        """Choose again; ``found``: ``_video()`` if the caller has it already."""
        if found is None:
            found = self._video()
        if found is None:
            return
        video, layers = found
        states = [
            LayerState(
                self._layer_bitrate(layer, now), layer.active(now, within=LAYER_ACTIVE_SECONDS)
            )
            for layer in layers
        ]
        if not any(state.active for state in states):
            return  # the publisher sends nothing (yet, or for now): nothing to choose from
        target = video.switching_to or video.producer
        current = None if video.paused or target not in layers else layers.index(target)
        selector = self.selector
        if selector.started:
            selector.layer = current
        if self.options.auto_layers or self.choice is not None:
            selection = selector.select(
                now, self.estimator, states, self._audio_bps, manual=self.choice
            )
        else:  # as without estimation: the top layer the publisher sends
            active = [i for i, state in enumerate(states) if state.active]
            selection = Selection(active[-1] if active else current, None)
        if selection.layer is None:
            if current is not None and not video.paused:
                video.pause()
        elif selection.layer != current:
            if current is None or selection.layer < current:
                # the next reports are about what was sent before: a resume's, about the
                # losses that paused it; a step down's, about the layer that did not fit
                self.estimator.ignore_loss(now + RESUME_LOSS_IGNORED_SECONDS)
            self._switch_to(video, layers[selection.layer])
        probe = selection.probe
        if probe is not None and self._probe_timer is None and self._probing is not probe:
            self._probing = probe
            self._probe_report = None
            for down_track in self._down_tracks():
                # the audio's too; not a paused video's: its sender reports repeat one
                # (``aiortc_adapter.send_sender_report``), which aiortc times from the last
                # repeat even when the answer is to an earlier one
                if down_track.kind == "video" and down_track.paused:
                    continue
                rtt = aiortc_adapter.sender_rtt(down_track.sender)
                if rtt is not None and rtt > 0:
                    self._rtts.append((now, rtt))
            extra = probe.rate - self.estimator.sent_bps  # on top of what it is sent now
            self._probe_tick(video, extra, probe.until, video.nacks_received)
        self._report(selection.layer, layers, video)

    def _switch_to(self, video: DownTrack, layer: Producer) -> None:
        if self._switch is not None and not self._switch.done():
            self._switch.cancel()
        self._switch = asyncio.ensure_future(video.switch_layer(layer))

    def _probe_tick(self, video: DownTrack, extra: float, until: float, nacks: int) -> None:
        """Send ``extra`` bits/s of padding until ``until``, unless the viewer asks for a
        retransmission meanwhile (``nacks``: its count when the probe began): the probe
        overflows its link's queue, and every packet more would be dropped, media too. On
        a link that loses packets anyway (``BandwidthEstimator.background_loss``) a NACK
        says nothing of the probe, and it runs its length: its queueing delay judges it."""
        self._probe_timer = None
        now = time.monotonic()
        if self.closed or video.closed or extra <= 0:
            return
        if self.selector.probe is not self._probing:
            return  # the probe failed already (its verdict came early): not one packet more
        if now >= until:
            self._probe_ended(video, now)
            return
        if (
            video.nacks_received > nacks
            and not video.paused
            and self.estimator.background_loss < self.estimator.settings.loss_low
        ):
            self._probe_ended(video, now)
            self.estimator.probe_overflowed(now)
            self._decide(now)
            return
        video.send_probe(int(extra * PROBE_TICK_SECONDS / 8))
        self._probe_timer = asyncio.get_running_loop().call_later(
            PROBE_TICK_SECONDS, self._probe_tick, video, extra, until, nacks
        )

    def _probe_ended(self, video: DownTrack, now: float) -> None:
        """The probe's padding stops: its last packets are queued behind the rest, and a
        report's round trip now tells how long that queue is, and so the link's rate."""
        probe = self._probing
        if not self._rtts or probe is None:
            return
        self.estimator.probe_sent(probe.rate, now - probe.started)
        # a paused video's tells the present (its last packet's was answered long ago); a
        # flowing one's, its last packet's, as aiortc's own do
        self._probe_report = aiortc_adapter.send_sender_report(
            video.sender, clock_rate=VIDEO_CLOCK_RATE if video.paused else None
        )

    def _report(self, layer: int | None, layers: Sequence[Producer], video: DownTrack) -> None:
        heights = tuple(size[1] if (size := p.frame_size) is not None else 0 for p in layers)
        event = ViewerQualityChanged(
            router_id=self.router_id,
            viewer_id=self.viewer_id,
            layer=layer,
            heights=heights,
            auto=self.choice is None,
            paused=layer is None,
        )
        if event != self._reported:
            self._reported = event
            self._emit(event)
