"""Results out: JSON in bench/results/ (build output, ignored by git), plots in docs/img/, the
tables in docs/BENCHMARKS.md."""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
from pathlib import Path
from typing import Any

import aiortc

from bench import host, source
from bench.measure import ServerResult

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "BENCHMARKS.md"
IMAGES = REPO / "docs" / "img"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
LABELS = {"onair": "OnAir", "janus": "Janus", "mediarelay": "aiortc MediaRelay"}
COLORS = {"onair": "#d1495b", "janus": "#00798c", "mediarelay": "#edae49"}


def _environment(spec: source.SourceSpec, when: datetime.datetime, command: str) -> dict[str, Any]:
    return {
        "date": when.isoformat(timespec="seconds"),
        "command": command,
        "machine": host.machine(),
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "source": spec.describe(),
    }


def write_step_json(
    name: str, result: Any, when: datetime.datetime, command: str, path: Path | None = None
) -> Path:
    """Write one step's ``result`` (a dataclass with ``summary()``) as JSON, by default to
    ``bench/results/<name>-<when>.json``; returns the path."""
    path = path or RESULTS / f"{name}-{when:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "date": when.isoformat(timespec="seconds"),
        "command": command,
        "machine": host.machine(),
        **dataclasses.asdict(result),
        "summary": result.summary(),
    }
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def write_json(
    results: list[ServerResult],
    spec: source.SourceSpec,
    when: datetime.datetime,
    command: str,
    path: Path | None = None,
) -> Path:
    path = path or RESULTS / f"{when:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "environment": _environment(spec, when, command),
        "servers": [
            {**dataclasses.asdict(result), "summary": result.summary()} for result in results
        ],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def _measured(results: list[ServerResult]) -> list[ServerResult]:
    return [r for r in results if r.error is None and r.cpu_fit is not None]


def _plot_fits(results: list[ServerResult], path: Path, attribute: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    forwarders = [r for r in results if r.name != "mediarelay"]
    relays = [r for r in results if r.name == "mediarelay"]
    panels = [group for group in (forwarders, relays) if group]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for axis, group in zip(axes[0], panels, strict=True):
        for result in group:
            scale = 100.0 if attribute == "server_cpu" else 1.0
            xs = [p.viewers for p in result.fitted]
            ys = [getattr(p, attribute) * scale for p in result.fitted]
            saturated = [p for p in result.points if p.saturated]
            fit = result.cpu_fit if attribute == "server_cpu" else result.rss_fit
            assert fit is not None
            if attribute == "server_cpu":
                label = (
                    f"{LABELS[result.name]}: {fit.slope * 100:.2f} %/viewer"
                    f" → {1 / fit.slope:,.0f} viewers/core (r² {fit.r2:.3f})"
                )
            else:
                label = (
                    f"{LABELS[result.name]}: {fit.slope * 1024:,.0f} KB/viewer (r² {fit.r2:.3f})"
                )
            color = COLORS[result.name]
            axis.plot(xs, ys, "o", color=color, label=label)
            if saturated:
                axis.plot([p.viewers for p in saturated],
                          [getattr(p, attribute) * scale for p in saturated], "x", color=color,
                          label=f"{LABELS[result.name]}: saturated, not fitted")  # fmt: skip
            line_x = [0, max(xs)]
            axis.plot(line_x, [(fit.slope * x + fit.intercept) * scale for x in line_x], "-",
                      color=color, alpha=0.6)  # fmt: skip
        axis.set_title(
            "decode once, re-encode per viewer" if group is relays else "forwarding RTP",
            fontsize=10,
        )
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("viewers")
        axis.set_ylabel(ylabel)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_viewers_per_core(results: list[ServerResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = [r for r in results if r.viewers_per_core]
    figure, axis = plt.subplots(figsize=(6.5, 0.7 + 0.6 * len(rated)))
    names = [LABELS[r.name] for r in rated]
    values = [r.viewers_per_core or 0.0 for r in rated]
    axis.barh(names, values, color=[COLORS[r.name] for r in rated])
    axis.set_xscale("log")
    axis.set_xlabel("viewers per core (log scale; from the CPU slope)")
    for y, value in enumerate(values):
        axis.text(value, y, f" {value:,.0f}", va="center", fontsize=9)
    axis.set_xlim(right=max(values) * 4)
    axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def number(value: float | None, pattern: str) -> str:
    """``value`` formatted, or a dash for a figure that was not measured."""
    return "—" if value is None else format(value, pattern)


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in ``path`` in
    place of what lies between those markers, or at its end the first time."""
    text = path.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def _ratio(results: list[ServerResult], top: str, bottom: str) -> str:
    by_name = {r.name: r.viewers_per_core for r in results}
    a, b = by_name.get(top), by_name.get(bottom)
    return f"{a / b:.2f}\N{MULTIPLICATION SIGN}" if a and b else "—"


def _live_join_lines(results: list[ServerResult]) -> list[str]:
    """The sentence on joins to a live encoder that answers keyframe requests (OnAir)."""
    lines = []
    for result in results:
        if result.error or not (result.live_join_ms or result.live_join_error):
            continue
        head = (
            "Join → first decoded frame with a live encoder that answers keyframe requests "
            f"({LABELS[result.name]})"
        )
        if result.live_join_error:
            lines += ["", f"{head}: failed ({result.live_join_error})."]
            continue
        s = result.summary()
        failed = s["live_joins_failed"]
        lines += [
            "",
            f"{head}: **p50 {number(s['live_join_ms_p50'], '.0f')} ms, "
            f"p95 {number(s['live_join_ms_p95'], '.0f')} ms** ({s['live_joins']} viewers"
            + (f", {failed} got no frame" if failed else "")
            + "; the publisher, aiortc's VP8 encoder at 640x480 and 30 fps, got "
            f"{result.live_keyframe_requests} keyframe requests and sent the next keyframe "
            f"p50 {number(s['live_keyframe_answer_ms_p50'], '.0f')} ms after each; "
            f"{result.live_keyframes_sent} keyframes in all). The table's decoded-frame "
            "column waits for the replayed file's keyframes instead.",
        ]
    return lines


def render(
    results: list[ServerResult],
    environment: dict[str, Any],
) -> str:
    machine = environment["machine"]
    lines = [
        f"Run {environment['date']} · `{environment['command']}` · {machine['cpu_model']}, "
        f"{machine['cores']} cores, Linux {machine['kernel']} · Python {environment['python']}, "
        f"aiortc {environment['aiortc']}",
        "",
        f"Source: {environment['source']}.",
        "",
        "| server | version | viewers/core | CPU per viewer | r² | CPU at N=0 | RSS per viewer "
        "| never connected | join → first packet p50 / p95 "
        "| join → first decoded frame p50 / p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if result.error:
            lines.append(f"| {LABELS[result.name]} | {result.version or '—'} | {result.error} "
                         "| | | | | | | |")  # fmt: skip
            continue
        s = result.summary()
        lines.append(
            f"| {LABELS[result.name]} | {result.version} "
            f"| **{number(s['viewers_per_core'], ',.0f')}** "
            f"| {number(s['cpu_per_viewer'] and s['cpu_per_viewer'] * 100, '.3f')} % "
            f"| {number(s['cpu_r2'], '.3f')} "
            f"| {number(s['cpu_intercept'] and s['cpu_intercept'] * 100, '.1f')} % "
            f"| {number(s['rss_kb_per_viewer'], ',.0f')} KB "
            f"| {s['never_connected']} "
            f"| {number(s['join_ms_p50'], '.0f')} / {number(s['join_ms_p95'], '.0f')} ms "
            f"| {number(s['decoded_join_ms_p50'], '.0f')} / "
            f"{number(s['decoded_join_ms_p95'], '.0f')} ms"
            + (f" ({s['decoded_joins_failed']} got none)" if s["decoded_joins_failed"] else "")
            + " |"
        )
    lines += [
        "",
        "Ratios of viewers/core, same run: "
        f"**OnAir ÷ Janus = {_ratio(results, 'onair', 'janus')}**, "
        f"**OnAir ÷ MediaRelay = {_ratio(results, 'onair', 'mediarelay')}**, "
        f"Janus ÷ MediaRelay = {_ratio(results, 'janus', 'mediarelay')}.",
    ]
    lines += _live_join_lines(results)
    latencies = [(result, latency) for result in results for latency in result.latency]
    if latencies:
        lines += [
            "",
            "Forwarding latency: the publisher sends a packet → a viewer has received and "
            "decrypted the same packet, over every viewer and video packet of a trace that "
            "spans whole keyframe intervals of the source.",
            "",
            "| server | viewers | traced | packets | p50 | p95 | p99 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for result, latency in latencies:
            lines.append(
                f"| {LABELS[result.name]} | {latency.viewers} | {latency.seconds:.0f} s "
                f"| {latency.samples} "
                f"| {number(latency.p50_ms, '.2f')} ms | {number(latency.p95_ms, '.2f')} ms "
                f"| {number(latency.p99_ms, '.2f')} ms |"
            )
        fanouts = [(r, lat, f) for r, lat in latencies for f in lat.fanout if f.batches]
        if fanouts:
            lines += [
                "",
                "What the forwarding latency is made of: on one core the viewers of a batch are "
                "served one after the other, so the last viewer waits for all the others. OnAir's "
                "server timed each batch forwarded to every viewer while the latency was traced:",
                "",
                "| server | viewers | track | batches | packets (max) | p50 | p99 | max |",
                "|---|---:|---|---:|---:|---:|---:|---:|",
            ]
            for result, latency, fanout in fanouts:
                lines.append(
                    f"| {LABELS[result.name]} | {latency.viewers} | {fanout.kind} "
                    f"| {fanout.batches} | {fanout.packets_max} "
                    f"| {number(fanout.p50_ms, '.2f')} ms | {number(fanout.p99_ms, '.2f')} ms "
                    f"| {number(fanout.max_ms, '.2f')} ms |"
                )
            pauses = [
                f"While the latency at {latency.viewers} "
                f"viewer{'' if latency.viewers == 1 else 's'} was traced, "
                f"{LABELS[result.name]}'s server {latency.gc.describe()}."
                for result, latency in latencies
                if latency.gc is not None
            ]
            if pauses:
                lines += ["", " ".join(pauses)]
    lines += [
        "",
        "![Server CPU against viewers](img/bench-cpu.png)",
        "",
        "![Viewers per core](img/bench-viewers-per-core.png)",
        "",
        "![Server RSS against viewers](img/bench-rss.png)",
    ]
    return "\n".join(lines)


def write_docs(
    results: list[ServerResult],
    spec: source.SourceSpec,
    when: datetime.datetime,
    command: str,
) -> list[Path]:
    measured = _measured(results)
    IMAGES.mkdir(parents=True, exist_ok=True)
    written = []
    if measured:
        _plot_fits(measured, IMAGES / "bench-cpu.png", "server_cpu", "server CPU (% of a core)")
        _plot_fits(measured, IMAGES / "bench-rss.png", "server_rss_mb", "server RSS (MB)")
        _plot_viewers_per_core(measured, IMAGES / "bench-viewers-per-core.png")
        written += [IMAGES / name for name in ("bench-cpu.png", "bench-rss.png")]
        written.append(IMAGES / "bench-viewers-per-core.png")
    table = render(results, _environment(spec, when, command))
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    written.append(DOC)
    return written
