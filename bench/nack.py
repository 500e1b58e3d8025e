"""A NACK-flooding viewer's cost to the server, against a normal viewer's, in one run.

    python -m bench --nack            # ≈ 3 minutes on 2 cores, updates docs/BENCHMARKS.md
    python -m bench --nack --quick    # ≈ 40 s (for a look, not for numbers)
    python -m bench --nack --quick --window 1    # shorter windows (the smoke test's)

Issue #17's finding 3: one viewer NACKing its last 1,000 packets 88 times a second made the
server resend 425 times the stream's rate. The same OnAir server as the main bench
(``bench.server``, pinned to the server core) is fed the same FFmpeg replay; the load
generator (the other core) joins K normal, non-decoding viewers, then F more that each send
that flood (``bench.loadgen``'s ``flood``). The server's CPU is sampled from /proc over a
steady window at each step:

1. no viewer; 2. K normal viewers; 3. K normal viewers + F flooders; 4. K normal viewers
   again, the flooders gone (2 and 4 bracket 3, so a drift of the machine shows);
5. a fresh server with ``--unlimited-retransmission`` (every NACKed packet in the cache
   resent, as before the retransmission budget): K normal viewers, then K + 1 flooder.

A normal viewer's cost is (mean of 2 and 4 - 1) / K, a flooder's (3 - mean of 2 and 4) / F,
and without the budget (5b - 5a) / 1. The server's down track counters (``POST /stats``) give
what the flooders were resent and refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import host, http, runner, source
from bench.report import number, write_section, write_step_json

Progress = Callable[[str], None]

BEGIN = "<!-- nack-flood:begin -->"
END = "<!-- nack-flood:end -->"
DOCS = runner.REPO / "docs" / "BENCHMARKS.md"
NACK_PACKETS = 1000  # each NACK names the flooder's last 1,000 video packets
NACKS_PER_SECOND = 88.0  # as in the issue
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True)
class NackPlan:
    normal: int  # K
    flooders: int  # F
    window: float


FULL = NackPlan(normal=40, flooders=4, window=15.0)
QUICK = NackPlan(normal=10, flooders=2, window=3.0)


@dataclass
class Window:
    """One steady window."""

    label: str
    server: str  # "budget" or "unlimited"
    normal: int
    flooders: int
    seconds: float
    server_cpu: float  # share of one core
    loadavg: float
    source_pps: float
    normal_pps_median: float | None
    normal_pps_min: float | None
    nacks_per_second: float  # sequence numbers NACKed by all flooders, per second
    retransmitted_per_second: float  # to all flooders
    refused_per_second: float
    flooder_forwarded_pps: float  # forwarded (not resent) to one flooder, video


@dataclass
class NackResult:
    plan: NackPlan
    windows: list[Window] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _cpu(self, server: str, normal: int, flooders: int) -> float | None:
        values = [
            w.server_cpu
            for w in self.windows
            if (w.server, w.normal, w.flooders) == (server, normal, flooders)
        ]
        return statistics.fmean(values) if values else None

    def summary(self) -> dict[str, float | None]:
        k, f = self.plan.normal, self.plan.flooders
        idle = self._cpu("budget", 0, 0)
        normal = self._cpu("budget", k, 0)
        flooded = self._cpu("budget", k, f)
        unlimited_normal = self._cpu("unlimited", k, 0)
        unlimited_flooded = self._cpu("unlimited", k, 1)
        per_viewer = (normal - idle) / k if normal is not None and idle is not None else None
        per_flooder = (flooded - normal) / f if flooded is not None and normal is not None else None
        unlimited = (
            unlimited_flooded - unlimited_normal
            if unlimited_flooded is not None and unlimited_normal is not None
            else None
        )

        def ratio(cost: float | None) -> float | None:
            return cost / per_viewer if cost is not None and per_viewer else None

        return {
            "normal_viewer_cpu": per_viewer,
            "flooder_cpu": per_flooder,
            "flooder_ratio": ratio(per_flooder),
            "unlimited_flooder_cpu": unlimited,
            "unlimited_flooder_ratio": ratio(unlimited),
        }


def _down_tracks(url: str) -> dict[str, dict[str, Any]]:
    stats = http.post_json_blocking(f"{url}/stats")
    return {t["down_track_id"]: t for t in stats if t["kind"] == "video"}


def _window(
    label: str,
    server: str,
    normal: int,
    flooders: int,
    plan: NackPlan,
    pid: int,
    url: str,
    load: runner._LoadGenerator,
    publisher: runner._Publisher,
) -> Window:
    time.sleep(runner.settle_seconds(plan.window))
    cpu0, stats0, snap0, sent0 = (
        host.sample(pid),
        _down_tracks(url),
        load.snapshot(),
        publisher.count(),
    )
    time.sleep(plan.window)
    cpu1, stats1, snap1, sent1 = (
        host.sample(pid),
        _down_tracks(url),
        load.snapshot(),
        publisher.count(),
    )
    seconds = snap1["at"] - snap0["at"]
    pps = [
        (after[0] - before[0]) / seconds
        for before, after in zip(snap0["viewers"], snap1["viewers"], strict=True)
        if after[2]
    ]

    def delta(name: str, flooding: bool) -> list[int]:
        return [
            c[name] - stats0.get(cid, {}).get(name, 0)
            for cid, c in stats1.items()
            if (c["nacks_received"] > 0) == flooding
        ]

    forwarded = delta("packets_sent", True)
    return Window(
        label=label,
        server=server,
        normal=normal,
        flooders=flooders,
        seconds=seconds,
        server_cpu=host.cpu_fraction(cpu0, cpu1),
        loadavg=os.getloadavg()[0],
        source_pps=(sent1[1] - sent0[1]) / (sent1[0] - sent0[0]),
        normal_pps_median=statistics.median(pps) if pps else None,
        normal_pps_min=min(pps) if pps else None,
        nacks_per_second=sum(delta("nacks_received", True)) / seconds,
        retransmitted_per_second=sum(delta("retransmitted_packets", True)) / seconds,
        refused_per_second=sum(delta("nacks_refused", True)) / seconds,
        flooder_forwarded_pps=statistics.fmean(forwarded) / seconds if forwarded else 0.0,
    )


def _describe(window: Window) -> str:
    return (
        f"[nack] {window.label}: server {window.server_cpu:6.1%} CPU, normal viewers "
        f"{window.normal_pps_median or 0:.0f} pkt/s (min {window.normal_pps_min or 0:.0f}, "
        f"source {window.source_pps:.0f})"
        + (
            f", flooders NACKed {window.nacks_per_second:,.0f}/s, resent "
            f"{window.retransmitted_per_second:,.0f}/s, refused {window.refused_per_second:,.0f}/s"
            if window.flooders
            else ""
        )
    )


def _server(
    result: NackResult,
    spec: source.SourceSpec,
    progress: Progress,
    unlimited: bool,
) -> None:
    plan = result.plan
    server_core, load_core = host.cores()
    name = "unlimited" if unlimited else "budget"
    args = ("--unlimited-retransmission",) if unlimited else ()
    with runner._run_folder(f"nack-{name}") as (folder, processes):
        try:
            pid, url, publisher = runner._start_whip_server(
                processes, "onair", spec, server_core, load_core, *args
            )
            time.sleep(runner.SOURCE_WARMUP_SECONDS)
            load = runner._start_load(processes, "whep", url, load_core)

            def window(label: str, normal: int, flooders: int) -> None:
                measured = _window(label, name, normal, flooders, plan, pid, url, load, publisher)
                result.windows.append(measured)
                progress(_describe(measured))

            k = plan.normal
            if not unlimited:
                window("no viewer", 0, 0)
            load.grow(k)
            window(f"{k} normal viewers", k, 0)
            flooders = 1 if unlimited else plan.flooders
            load.flood(flooders, NACKS_PER_SECOND, NACK_PACKETS)
            window(
                f"{k} normal + {flooders} flooding" + (" (no budget)" if unlimited else ""),
                k,
                flooders,
            )
            load.stop_flood()
            if not unlimited:
                window(f"{k} normal viewers again", k, 0)
            load.quit()
        except Exception as exc:
            result.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            progress(f"[nack] {name} failed: {result.errors[-1]}")
            runner._show_logs(folder, progress)


def measure(plan: NackPlan, spec: source.SourceSpec, progress: Progress) -> NackResult:
    result = NackResult(plan=plan)
    progress(
        f"[nack] {plan.normal} normal viewers, {plan.flooders} flooding ({NACK_PACKETS:,} "
        f"packets per NACK, {NACKS_PER_SECOND:.0f} NACKs/s each), {plan.window:.0f} s windows"
    )
    _server(result, spec, progress, unlimited=False)
    _server(result, spec, progress, unlimited=True)
    s = result.summary()
    progress(
        f"[nack] a flooding viewer costs {number(s['flooder_ratio'], '.1f')}{TIMES} a normal "
        f"viewer's CPU ({number(s['flooder_cpu'], '.2%')} against "
        f"{number(s['normal_viewer_cpu'], '.3%')} of a core); without the budget "
        f"{number(s['unlimited_flooder_ratio'], '.0f')}{TIMES} "
        f"({number(s['unlimited_flooder_cpu'], '.1%')})"
    )
    return result


def markdown(result: NackResult, when: datetime.datetime, command: str) -> str:
    machine = host.machine()
    s = result.summary()
    plan = result.plan
    flooded = [w for w in result.windows if w.server == "budget" and w.flooders]
    resent = (
        f"each flooder sent {NACKS_PER_SECOND:.0f} NACKs/s naming {NACK_PACKETS:,} packets, "
        f"of which {flooded[0].nacks_per_second / plan.flooders:,.0f} sequence numbers/s "
        "were read; it was resent "
        f"{flooded[0].retransmitted_per_second / plan.flooders:.0f} packets/s and refused "
        f"{flooded[0].refused_per_second / plan.flooders:,.0f}, while "
        f"{flooded[0].flooder_forwarded_pps:.0f} video packets/s were forwarded to it"
        if flooded
        else "no flood was measured"
    )
    unlimited = [w for w in result.windows if w.server == "unlimited" and w.flooders]
    unlimited_resent = (
        f" (it was resent {unlimited[0].retransmitted_per_second:,.0f} packets/s)"
        if unlimited
        else ""
    )
    rows = [
        "| step | server | server CPU | normal viewers pkt/s median (min) | source pkt/s "
        "| sequence numbers read of the flooders' NACKs /s | resent/s | refused/s | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in result.windows:
        rows.append(
            f"| {w.label} | {w.server} | {w.server_cpu:.1%} "
            f"| {number(w.normal_pps_median, '.0f')} ({number(w.normal_pps_min, '.0f')}) "
            f"| {w.source_pps:.0f} | {w.nacks_per_second:,.0f} "
            f"| {w.retransmitted_per_second:,.0f} | {w.refused_per_second:,.0f} "
            f"| {w.loadavg:.1f} |"
        )
    lines = [
        BEGIN,
        f"*Generated by `{command}` on {when:%Y-%m-%d %H:%M} UTC — {machine['cores']} cores, "
        f"{machine['cpu_model']}, Linux {machine['kernel']}; {plan.normal} normal viewers, "
        f"{plan.flooders} flooding, {plan.window:.0f} s windows.*",
        "",
        f"- **A NACK-flooding viewer costs {number(s['flooder_ratio'], '.1f')}{TIMES} a normal "
        f"viewer's CPU** ({number(s['flooder_cpu'], '.2%')} of a core against "
        f"{number(s['normal_viewer_cpu'], '.3%')}); {resent}.",
        f"- Without the budget (`--unlimited-retransmission`), one flooder cost "
        f"{number(s['unlimited_flooder_cpu'], '.1%')} of a core, "
        f"{number(s['unlimited_flooder_ratio'], ',.0f')}{TIMES} a normal viewer"
        f"{unlimited_resent}.",
        "",
        *rows,
        "",
        *(f"- Error: {error}" for error in result.errors),
        END,
    ]
    return "\n".join(lines)


def write_docs(result: NackResult, when: datetime.datetime, command: str) -> list[Path]:
    write_section(DOCS, BEGIN, END, markdown(result, when, command))
    return [DOCS]


def main(
    quick: bool,
    progress: Progress,
    command: str,
    *,
    report: bool = True,
    json_path: Path | None = None,
    window: float | None = None,
) -> int:
    spec = source.SourceSpec()
    source.encoded_file(spec)
    started = time.monotonic()
    plan = QUICK if quick else FULL
    if window:
        plan = dataclasses.replace(plan, window=window)
    result = measure(plan, spec, progress)
    when = datetime.datetime.now(datetime.UTC)
    progress(f"results: {write_step_json('nack', result, when, command, json_path)}")
    if report:
        for written in write_docs(result, when, command):
            progress(f"wrote {written}")
    progress(f"[nack] done in {time.monotonic() - started:.0f} s")
    return 0 if not result.errors else 1
