"""Results of a run and the arithmetic on them: linear fits, rates, percentiles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fit:
    """y = slope · x + intercept, least squares, with the coefficient of determination."""

    slope: float
    intercept: float
    r2: float


def linear_fit(xs: list[float], ys: list[float]) -> Fit:
    n = len(xs)
    if n < 2:
        raise ValueError("a fit needs at least two points")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    return Fit(slope, intercept, 1.0 - ss_res / ss_tot if ss_tot else 1.0)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# Above this share of its core, a process queues work instead of doing it: the point says
# nothing more about cost per viewer, so it is reported but left out of the fits.
SATURATED = 0.9


@dataclass
class Point:
    """One steady window with ``viewers`` viewers watching."""

    viewers: int
    connected: int
    never_connected: int
    seconds: float
    server_cpu: float  # share of one core
    server_rss_mb: float
    load_cpu: float  # the load generator's share of its core: near 1.0 means it saturated
    viewer_kbps: list[float] = field(default_factory=list)
    viewer_pps: list[float] = field(default_factory=list)
    join_ms: list[float] = field(default_factory=list)
    # Packets per second the publisher sent to the server in the same window.
    source_pps: float | None = None
    # A forwarder whose viewers get fewer packets than the publisher sent is short of CPU
    # (on a shared machine, other processes can take the pinned core): not a cost measurement.
    starved: bool = False

    @property
    def saturated(self) -> bool:
        return self.server_cpu > SATURATED or self.load_cpu > SATURATED or self.starved

    @property
    def median_kbps(self) -> float | None:
        return percentile(self.viewer_kbps, 50)

    @property
    def median_pps(self) -> float | None:
        return percentile(self.viewer_pps, 50)

    @property
    def min_kbps(self) -> float | None:
        return min(self.viewer_kbps) if self.viewer_kbps else None


@dataclass
class Fanout:
    """How long forwarding one batch of a track to every viewer took, while the latency was
    traced (OnAir only: the server times its ``Producer.flush`` calls)."""

    kind: str
    batches: int
    packets_max: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, kind: str, flushes: list[tuple[int, float]]) -> Fanout:
        """``flushes``: (packets, seconds) of each batch."""
        durations_ms = [seconds * 1000 for _, seconds in flushes]
        return cls(
            kind=kind,
            batches=len(flushes),
            packets_max=max((packets for packets, _ in flushes), default=0),
            p50_ms=percentile(durations_ms, 50),
            p99_ms=percentile(durations_ms, 99),
            max_ms=max(durations_ms, default=None),
        )


@dataclass(frozen=True)
class Pauses:
    """The server's garbage collections while the latency was traced (OnAir only): each stops
    every viewer's forwarding while it runs."""

    count: int
    full: int  # of the oldest generation, which walks every object
    total_ms: float
    max_ms: float | None

    @classmethod
    def of(cls, collections: list[tuple[int, float]]) -> Pauses:
        """``collections``: (generation, seconds) of each."""
        return cls(
            count=len(collections),
            full=sum(1 for generation, _ in collections if generation == 2),
            total_ms=sum(seconds for _, seconds in collections) * 1000,
            max_ms=max((seconds * 1000 for _, seconds in collections), default=None),
        )

    def describe(self) -> str:
        """What the server ran, in words (the runner's progress lines and the report)."""
        if not self.count:
            return "ran no garbage collection"
        return (
            f"ran {self.count} garbage collection{'' if self.count == 1 else 's'} "
            f"({self.full} full), {self.total_ms:.1f} ms in all, the longest "
            f"{self.max_ms or 0:.2f} ms"
        )


@dataclass
class Latency:
    """Publisher sends a packet → a viewer receives the same packet, over all viewers."""

    viewers: int
    seconds: float  # how long it was traced
    samples: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    fanout: list[Fanout] = field(default_factory=list)
    gc: Pauses | None = None

    @classmethod
    def of(
        cls,
        viewers: int,
        seconds: float,
        delays_ms: list[float],
        fanout: list[Fanout] | None = None,
        gc: Pauses | None = None,
    ) -> Latency:
        return cls(
            viewers=viewers,
            seconds=seconds,
            samples=len(delays_ms),
            p50_ms=percentile(delays_ms, 50),
            p95_ms=percentile(delays_ms, 95),
            p99_ms=percentile(delays_ms, 99),
            fanout=fanout or [],
            gc=gc,
        )


@dataclass
class ServerResult:
    name: str
    version: str
    points: list[Point] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    # Join → first decoded frame of decoding viewers joining one at a time (None: none came).
    decoded_join_ms: list[float | None] = field(default_factory=list)
    # The same, joining a live encoder that answers keyframe requests (OnAir only), and what
    # that publisher saw: keyframe requests (PLI/FIR) reaching it, keyframes it sent, and for
    # each answered request the time to its keyframe's first packet leaving.
    live_join_ms: list[float | None] = field(default_factory=list)
    live_keyframe_requests: int | None = None
    live_keyframes_sent: int | None = None
    live_keyframe_answer_ms: list[float] = field(default_factory=list)
    live_join_error: str | None = None
    error: str | None = None

    @property
    def fitted(self) -> list[Point]:
        return [p for p in self.points if not p.saturated]

    @property
    def cpu_fit(self) -> Fit | None:
        if len(self.fitted) < 2:
            return None
        return linear_fit([p.viewers for p in self.fitted], [p.server_cpu for p in self.fitted])

    @property
    def rss_fit(self) -> Fit | None:
        if len(self.fitted) < 2:
            return None
        return linear_fit([p.viewers for p in self.fitted], [p.server_rss_mb for p in self.fitted])

    @property
    def viewers_per_core(self) -> float | None:
        fit = self.cpu_fit
        return 1.0 / fit.slope if fit and fit.slope > 0 else None

    @property
    def never_connected(self) -> int:
        return max((p.never_connected for p in self.points), default=0)

    @property
    def join_ms(self) -> list[float]:
        return [ms for p in self.points for ms in p.join_ms]

    @property
    def _decoded_joins(self) -> list[float]:
        return [ms for ms in self.decoded_join_ms if ms is not None]

    @property
    def _live_joins(self) -> list[float]:
        return [ms for ms in self.live_join_ms if ms is not None]

    def summary(self) -> dict[str, Any]:
        cpu, rss = self.cpu_fit, self.rss_fit
        return {
            "cpu_per_viewer": cpu.slope if cpu else None,
            "cpu_intercept": cpu.intercept if cpu else None,
            "cpu_r2": cpu.r2 if cpu else None,
            "viewers_per_core": self.viewers_per_core,
            "rss_kb_per_viewer": rss.slope * 1024 if rss else None,
            "rss_r2": rss.r2 if rss else None,
            "never_connected": self.never_connected,
            "join_ms_p50": percentile(self.join_ms, 50),
            "join_ms_p95": percentile(self.join_ms, 95),
            "decoded_join_ms_p50": percentile(self._decoded_joins, 50),
            "decoded_join_ms_p95": percentile(self._decoded_joins, 95),
            "decoded_joins_failed": sum(1 for ms in self.decoded_join_ms if ms is None),
            "live_join_ms_p50": percentile(self._live_joins, 50),
            "live_join_ms_p95": percentile(self._live_joins, 95),
            "live_joins": len(self._live_joins),
            "live_joins_failed": sum(1 for ms in self.live_join_ms if ms is None),
            "live_keyframe_answer_ms_p50": percentile(self.live_keyframe_answer_ms, 50),
        }
