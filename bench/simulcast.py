"""Simulcast in the bench: OnAir's viewers per core with a three-layer source beside the
single-layer one, and how fast a viewer whose bandwidth drops is moved to a lower layer.

    python -m bench --simulcast            # ≈ 3 minutes on 2 cores, updates docs/BENCHMARKS.md
    python -m bench --simulcast --quick    # ≈ 1 minute (for a look, not for numbers)

1. The main bench's OnAir server (``bench.server``, server core) fed the single-layer FFmpeg
   replay; the load generator (the other core) grows the audience of non-decoding viewers
   and the server's CPU is sampled over a steady window at each size, as the main bench
   does (``bench.runner``).
2. The same with a fresh server fed RID simulcast (``bench.publisher --simulcast``: the same
   picture as the top layer, ½ and ¼ below it, each pre-encoded and looped, sent as Chromium
   sends simulcast). Which layer each viewer got is read from its received rate against the
   layers' rates: the load generator's viewers send no REMB and lose nothing, so the SFU's
   estimate for them stays at its initial value and they are expected on the top layer.
3. On that server, one viewer (``bench.switch_viewer``: receiver reports, no REMB) starts
   on the top layer; its link is limited to ``drop_bps`` (an in-process token bucket:
   rate, 200 ms queue, tail drop); the time from the limit to the first keyframe of a
   lower layer reaching it is the switch time; the limit is lifted and the time back to
   the top layer measured too.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import host, runner, source
from bench.measure import Point, ServerResult, percentile
from bench.report import number, write_section, write_step_json

Progress = Callable[[str], None]

BEGIN = "<!-- simulcast:begin -->"
END = "<!-- simulcast:end -->"
DOCS = runner.REPO / "docs" / "BENCHMARKS.md"
SWITCH_WITHIN = 15.0  # seconds a drop may take to show a lower layer's keyframe
UP_WITHIN = 30.0  # ... and a lift the top layer's


@dataclass(frozen=True)
class SimulcastPlan:
    viewers: list[int]
    window: float
    drops: int  # bandwidth drops measured
    drop_bps: int  # the viewer's link during a drop: below the top layer, above the middle


FULL = SimulcastPlan(viewers=[0, 25, 50, 75], window=10.0, drops=3, drop_bps=1_000_000)
QUICK = SimulcastPlan(viewers=[0, 10, 20], window=3.0, drops=1, drop_bps=1_000_000)


@dataclass
class SimulcastResult:
    plan: SimulcastPlan
    single: ServerResult
    simulcast: ServerResult
    layer_kbps: dict[str, float] = field(default_factory=dict)  # sent by the publisher
    viewers_on: dict[str, int] = field(default_factory=dict)  # at the largest audience
    switch_ms: list[float | None] = field(default_factory=list)
    up_ms: list[float | None] = field(default_factory=list)
    switch_skipped: str | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        switched = [ms for ms in self.switch_ms if ms is not None]
        came_up = [ms for ms in self.up_ms if ms is not None]
        return {
            "single_viewers_per_core": self.single.viewers_per_core,
            "simulcast_viewers_per_core": self.simulcast.viewers_per_core,
            "switch_ms_p50": percentile(switched, 50),
            "switch_ms_max": max(switched, default=None),
            "switches_missed": len(self.switch_ms) - len(switched),
            "up_ms_p50": percentile(came_up, 50),
            "ups_missed": len(self.up_ms) - len(came_up),
        }


class _SimulcastPublisher(runner._Child):
    """``bench.publisher --simulcast``: says hello once connected."""

    def count(self) -> tuple[float, int]:
        reply = self._ask({"op": "count"}, timeout=30)
        return float(reply["at"]), int(reply["packets"])

    def layers(self) -> dict[str, Any]:
        return dict(self._ask({"op": "layers"}, timeout=30))


class _SwitchViewer(runner._Child):
    def drop(self, bps: int) -> dict[str, Any]:
        return dict(
            self._ask({"op": "drop", "bps": bps, "within": SWITCH_WITHIN}, SWITCH_WITHIN + 10)
        )

    def lift(self) -> dict[str, Any]:
        return dict(self._ask({"op": "lift", "within": UP_WITHIN}, UP_WITHIN + 10))


def _layer_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """kbit/s each layer was sent between two ``layers`` answers (payload bytes)."""
    seconds = after["at"] - before["at"]
    return {
        rid: (layer["bytes"] - before["layers"][rid]["bytes"]) * 8 / 1000 / seconds
        for rid, layer in after["layers"].items()
    }


def _nearest_layer(kbps: float, rates: dict[str, float]) -> str:
    return min(rates, key=lambda rid: abs(rates[rid] - kbps))


def _sweep(
    label: str,
    result: ServerResult,
    plan: SimulcastPlan,
    server_pid: int,
    load: runner._LoadGenerator,
    publisher: Any,
    progress: Progress,
    on_point: Callable[[Point], None] | None = None,
) -> None:
    points = runner.Plan(viewers=plan.viewers, window=plan.window)
    for n in plan.viewers:
        grown = load.grow(n)
        point = runner._point(n, server_pid, load, publisher, points, grown["joins"])
        if point.viewers and point.source_pps:
            point.starved = (point.median_pps or 0.0) < runner.STARVED * point.source_pps
        result.points.append(point)
        if on_point is not None:
            on_point(point)
        progress(
            f"[simulcast] {label} N={n:>3}: {point.connected}/{n} connected, server "
            f"{point.server_cpu:6.1%} CPU, viewer median {point.median_kbps or 0:5.0f} kbit/s "
            f"{point.median_pps or 0:4.0f} pkt/s (source {point.source_pps or 0:4.0f})"
        )
        if point.saturated:
            progress(f"[simulcast] {label}: saturated or starved at N={n}: larger ones skipped")
            break


def _single(result: SimulcastResult, spec: source.SourceSpec, progress: Progress) -> None:
    server_core, load_core = host.cores()
    with runner._run_folder("simulcast-single") as (folder, processes):
        try:
            pid, url, publisher = runner._start_whip_server(
                processes, "onair", spec, server_core, load_core
            )
            time.sleep(runner.SOURCE_WARMUP_SECONDS)
            load = runner._start_load(processes, "whep", url, load_core)
            _sweep("single layer", result.single, result.plan, pid, load, publisher, progress)
            load.quit()
        except Exception as exc:
            result.single.error = f"{type(exc).__name__}: {exc}"
            result.errors.append(f"single layer: {result.single.error}")
            progress(f"[simulcast] single layer failed: {result.single.error}")
            runner._show_logs(folder, progress)


def _simulcast(result: SimulcastResult, progress: Progress) -> None:
    plan = result.plan
    server_core, load_core = host.cores()
    with runner._run_folder("simulcast") as (folder, processes):
        try:
            pid, url = runner._start_bench_server(processes, "onair", server_core)
            command = runner._python("bench.publisher", "--url", url, "--simulcast")
            publisher = _SimulcastPublisher(
                processes.start("simulcast-publisher", command, load_core, True)
            )
            if not publisher.hello["simulcast"]:
                raise RuntimeError("the SFU answered without a=simulcast: no simulcast ingest")
            time.sleep(runner.SOURCE_WARMUP_SECONDS)
            load = runner._start_load(processes, "whep", url, load_core)
            before = publisher.layers()

            def classify(point: Point) -> None:
                nonlocal before
                after = publisher.layers()
                rates = _layer_rates(before, after)
                before = after
                result.layer_kbps = rates
                on: dict[str, int] = dict.fromkeys(rates, 0)
                # the layers are 3 times apart or more: a viewer's audio and RTP headers
                # (≈ 50 kbit/s) cannot make one look like its neighbour
                for kbps in point.viewer_kbps:
                    on[_nearest_layer(kbps, rates)] += 1
                result.viewers_on = on

            _sweep("simulcast", result.simulcast, plan, pid, load, publisher, progress, classify)
            load.quit()
            progress(
                "[simulcast] layers sent (kbit/s): "
                + ", ".join(f"{rid} {kbps:.0f}" for rid, kbps in result.layer_kbps.items())
                + "; viewers on each at the largest audience: "
                + ", ".join(f"{rid} {count}" for rid, count in result.viewers_on.items())
            )
            top_width = int(publisher.hello["layers"][-1]["width"])
            _switches(result, url, top_width, processes, load_core, progress)
        except Exception as exc:
            result.simulcast.error = f"{type(exc).__name__}: {exc}"
            result.errors.append(f"simulcast: {result.simulcast.error}")
            progress(f"[simulcast] failed: {result.simulcast.error}")
            runner._show_logs(folder, progress)


def _switches(
    result: SimulcastResult,
    url: str,
    top_width: int,
    processes: runner._Processes,
    core: int,
    progress: Progress,
) -> None:
    command = runner._python("bench.switch_viewer", "--url", url, "--top-width", str(top_width))
    viewer = _SwitchViewer(processes.start("switch-viewer", command, core, True))
    top = viewer.hello["width"]
    if top != top_width:
        result.switch_skipped = f"the viewer was not sent the top layer (keyframe width {top})"
        return
    for drop in range(result.plan.drops):
        answer = viewer.drop(result.plan.drop_bps)
        result.switch_ms.append(answer["switch_ms"])
        lifted = viewer.lift()
        result.up_ms.append(lifted["up_ms"])
        progress(
            f"[simulcast] drop {drop + 1}: {top} px wide → {answer['width']} px after "
            f"{number(answer['switch_ms'], '.0f')} ms ({answer['dropped']} packets dropped "
            f"so far); lifted: back to {lifted['width']} px after "
            f"{number(lifted['up_ms'], '.0f')} ms"
        )
        if answer["switch_ms"] is None:
            result.switch_skipped = (
                f"no lower layer within {SWITCH_WITHIN:.0f} s of the drop: the SFU does not "
                "switch this viewer's layer"
            )
            return


def measure(plan: SimulcastPlan, spec: source.SourceSpec, progress: Progress) -> SimulcastResult:
    from bench.__main__ import _onair_version

    version = _onair_version() or "OnAir"
    result = SimulcastResult(
        plan=plan,
        single=ServerResult(name="onair", version=version),
        simulcast=ServerResult(name="onair", version=version),
    )
    progress(
        f"[simulcast] N = {plan.viewers}, {plan.window:.0f} s windows; "
        f"{source.LayeredSourceSpec().describe()}"
    )
    _single(result, spec, progress)
    _simulcast(result, progress)
    s = result.summary()
    progress(
        f"[simulcast] viewers per core: single layer {number(s['single_viewers_per_core'], ',.0f')}"
        f", simulcast {number(s['simulcast_viewers_per_core'], ',.0f')}; bandwidth drop → "
        f"lower layer p50 {number(s['switch_ms_p50'], '.0f')} ms"
        + (f" ({result.switch_skipped})" if result.switch_skipped else "")
    )
    return result


def _where(result: SimulcastResult) -> str:
    on = {rid: n for rid, n in result.viewers_on.items() if n}
    if not on:
        return "no viewer measured"
    if len(on) == 1:
        (rid,) = on
        return f"every viewer on layer {rid}"
    return "viewers spread: " + ", ".join(f"{n} on {rid}" for rid, n in on.items())


def markdown(result: SimulcastResult, when: datetime.datetime, command: str) -> str:
    """One paragraph: the doc stays short."""
    s = result.summary()
    plan = result.plan
    rates = ", ".join(f"{rid} {kbps:.0f}" for rid, kbps in result.layer_kbps.items())
    if result.switch_skipped:
        switch = f"not measured: {result.switch_skipped}"
    else:
        switch = (
            f"**{number(s['switch_ms_p50'], ',.0f')} ms** p50 (max "
            f"{number(s['switch_ms_max'], ',.0f')} ms, {len(result.switch_ms)} drops, "
            f"{s['switches_missed']} missed), back to the top layer after lifting it "
            f"{number(s['up_ms_p50'], ',.0f')} ms p50"
        )
    errors = "".join(f" Error: {error}." for error in result.errors)
    return "\n".join(
        [
            BEGIN,
            f"**Simulcast** (`{command}`, {when:%Y-%m-%d %H:%M} UTC, N = {plan.viewers}, "
            f"{plan.window:.0f} s windows): OnAir forwards "
            f"**{number(s['simulcast_viewers_per_core'], ',.0f')} viewers/core with a "
            f"three-layer simulcast source** ({_where(result)} at the largest audience; layers "
            f"sent {rates} kbit/s) against **{number(s['single_viewers_per_core'], ',.0f')} "
            f"with the single-layer source**, same run. A viewer on the top layer whose link "
            f"drops to {plan.drop_bps / 1e6:g} Mbit/s (in-process token bucket, 200 ms queue) "
            f"gets its first keyframe of a lower layer after {switch}.{errors}",
            END,
        ]
    )


def write_docs(result: SimulcastResult, when: datetime.datetime, command: str) -> list[Path]:
    write_section(DOCS, BEGIN, END, markdown(result, when, command))
    return [DOCS]


def main(
    quick: bool,
    progress: Progress,
    command: str,
    *,
    report: bool = True,
    json_path: Path | None = None,
    viewers: list[int] | None = None,
    window: float | None = None,
) -> int:
    spec = source.SourceSpec()
    source.encoded_file(spec)
    source.encoded_layers(source.LayeredSourceSpec())
    plan = QUICK if quick else FULL
    if viewers:
        plan = dataclasses.replace(plan, viewers=viewers)
    if window:
        plan = dataclasses.replace(plan, window=window)
    started = time.monotonic()
    result = measure(plan, spec, progress)
    when = datetime.datetime.now(datetime.UTC)
    progress(f"results: {write_step_json('simulcast', result, when, command, json_path)}")
    if report:
        for written in write_docs(result, when, command):
            progress(f"wrote {written}")
    progress(f"[simulcast] done in {time.monotonic() - started:.0f} s")
    return 0 if not result.errors else 1
