"""What recording a stream costs the server, beside what forwarding it costs, in one run.

    python -m bench --recording            # ≈ 5 minutes on 2 cores, updates docs/BENCHMARKS.md
    python -m bench --recording --quick    # ≈ 1 minute (a look, not numbers)

For each codec (VP8 + Opus, then H.264 + Opus), the main bench's OnAir server
(``bench.server``, server core) is fed that codec's FFmpeg replay (``bench.source``) by the
bench's aiortc publisher, and the load generator (the other core) joins N non-decoding
viewers, as ``bench.runner`` does. The server's CPU (its own accounting from /proc, every
thread: ``bench.host``) is sampled over a steady window with no viewer, then over windows with
the N viewers that alternate off, on, off, …, off: an "on" window lies inside one recording
(``POST /record``: started before the window and answered once its file is open, at the first
keyframe; stopped after it and answered once the file is closed). A recording's cost is its
window's CPU minus the mean of the two "off" windows around it (same server, viewers and
source; a drift of the machine shows as a difference between those two); the figure is the
median over the repetitions. Bytes written per second: each finished file's size over its
duration. Playability: after the windows each file is decoded here with PyAV (the server
decodes nothing), its video frames against those the publisher sent from its opening to the
stop (so the keyframe it opened on is one more).
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.error

from bench import host, http, runner, source
from bench.report import number, write_section, write_step_json

Progress = Callable[[str], None]

BEGIN = "<!-- recording:begin -->"
END = "<!-- recording:end -->"
DOCS = runner.REPO / "docs" / "BENCHMARKS.md"
CODECS = {"vp8": "VP8 + Opus → WebM", "h264": "H.264 + Opus → MP4"}


@dataclass(frozen=True)
class RecordingPlan:
    viewers: int
    window: float
    repetitions: int  # recordings measured per codec, each between two windows without
    codecs: tuple[str, ...] = ("vp8", "h264")


FULL = RecordingPlan(viewers=40, window=10.0, repetitions=5)
QUICK = RecordingPlan(viewers=10, window=3.0, repetitions=2)


@dataclass
class Window:
    viewers: int
    recording: bool
    seconds: float
    server_cpu: float  # share of one core
    source_pps: float
    viewer_pps_median: float | None


@dataclass
class RecordedFile:
    container: str
    duration: float  # seconds, as the recorder reported it
    size: int  # bytes
    muxed_frames: int  # video frames the recorder wrote
    sent_frames: int  # video frames the publisher sent from the file's opening to the stop
    decoded_frames: int  # decoded here
    decode_error: str | None = None


@dataclass
class CodecResult:
    codec: str
    source: str
    windows: list[Window] = field(default_factory=list)
    files: list[RecordedFile] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        idle = [w.server_cpu for w in self.windows if not w.viewers]
        off = [w.server_cpu for w in self.windows if w.viewers and not w.recording]
        # The windows alternate off, on, off, …: each on window against the two around it.
        steady = [w for w in self.windows if w.viewers]
        extra = [
            steady[i].server_cpu - (steady[i - 1].server_cpu + steady[i + 1].server_cpu) / 2
            for i in range(1, len(steady) - 1)
            if steady[i].recording and not steady[i - 1].recording and not steady[i + 1].recording
        ]
        viewers = steady[0].viewers if steady else 0
        per_viewer = (
            (statistics.median(off) - statistics.median(idle)) / viewers
            if off and idle and viewers
            else None
        )
        cost = statistics.median(extra) if extra else None
        rates = [f.size / f.duration for f in self.files if f.duration > 0]
        return {
            "viewers": viewers,
            "forwarding_cpu": statistics.median(off) if off else None,
            "idle_cpu": statistics.median(idle) if idle else None,
            "viewer_cpu": per_viewer,
            "recording_cpu": cost,
            "recording_cpu_min": min(extra, default=None),
            "recording_cpu_max": max(extra, default=None),
            "recordings": len(extra),
            "recording_in_viewers": cost / per_viewer if cost is not None and per_viewer else None,
            "bytes_per_second": statistics.median(rates) if rates else None,
            "decoded_frames": sum(f.decoded_frames for f in self.files),
            "sent_frames": sum(f.sent_frames for f in self.files),
            "muxed_frames": sum(f.muxed_frames for f in self.files),
            "files_failing": sum(1 for f in self.files if f.decode_error is not None),
        }


@dataclass
class RecordingResult:
    plan: RecordingPlan
    codecs: list[CodecResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {result.codec: result.summary() for result in self.codecs}


def _window(
    n: int,
    recording: bool,
    seconds: float,
    pid: int,
    load: runner._LoadGenerator,
    publisher: runner._Publisher,
) -> Window:
    time.sleep(runner.settle_seconds(seconds))
    cpu0, snap0, sent0 = host.sample(pid), load.snapshot(), publisher.count()
    time.sleep(seconds)
    cpu1, snap1, sent1 = host.sample(pid), load.snapshot(), publisher.count()
    elapsed = snap1["at"] - snap0["at"]
    pps = [
        (after[0] - before[0]) / elapsed
        for before, after in zip(snap0["viewers"], snap1["viewers"], strict=True)
        if after[2]
    ]
    return Window(
        viewers=n,
        recording=recording,
        seconds=elapsed,
        server_cpu=host.cpu_fraction(cpu0, cpu1),
        source_pps=(sent1[1] - sent0[1]) / (sent1[0] - sent0[0]),
        viewer_pps_median=statistics.median(pps) if pps else None,
    )


def _describe(codec: str, window: Window) -> str:
    what = "recording" if window.recording else "not recording"
    return (
        f"[recording] {codec} N={window.viewers:>3} {what:>13}: server "
        f"{window.server_cpu:6.1%} CPU, viewer median {window.viewer_pps_median or 0:4.0f} "
        f"pkt/s (source {window.source_pps:4.0f})"
    )


def decoded_frames(path: Path) -> int:
    """Video frames decoded from ``path`` (raises ``av.error.FFmpegError`` on one that does
    not decode)."""
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) for _ in packet.decode())


def _recorded_file(stopped: dict[str, Any], sent_frames: int) -> RecordedFile:
    path = Path(stopped["path"])
    recorded = RecordedFile(
        container=path.suffix.lstrip("."),
        duration=float(stopped["duration"]),
        size=int(stopped["size"]),
        muxed_frames=int(stopped["video_frames"]),
        sent_frames=sent_frames,
        decoded_frames=0,
    )
    if stopped["reason"] != "stopped":
        recorded.decode_error = f"the recording stopped with {stopped['reason']}"
        return recorded
    try:
        recorded.decoded_frames = decoded_frames(path)
    except (av.error.FFmpegError, OSError) as exc:
        recorded.decode_error = f"{type(exc).__name__}: {exc}"
    return recorded


def _codec(result: CodecResult, plan: RecordingPlan, progress: Progress) -> None:
    spec = source.SourceSpec(video_codec=result.codec)
    server_core, load_core = host.cores()
    with runner._run_folder(f"recording-{result.codec}") as (folder, processes):
        try:
            pid, url = runner._start_bench_server(processes, "onair", server_core)
            h264 = ("--h264",) if result.codec == "h264" else ()
            publisher = runner._start_source(processes, spec, load_core, "--url", url, *h264)
            time.sleep(runner.SOURCE_WARMUP_SECONDS)
            load = runner._start_load(processes, "whep", url, load_core)

            def window(n: int, recording: bool) -> None:
                measured = _window(n, recording, plan.window, pid, load, publisher)
                result.windows.append(measured)
                progress(_describe(result.codec, measured))

            window(0, False)
            load.grow(plan.viewers)
            window(plan.viewers, False)
            recorded: list[tuple[dict[str, Any], int]] = []
            for _ in range(plan.repetitions):
                record = {"op": "start", "directory": str(folder / "recordings")}
                http.post_json_blocking(f"{url}/record", record)
                frames = publisher.video_frames()
                window(plan.viewers, True)
                frames = publisher.video_frames() - frames
                recorded.append((http.post_json_blocking(f"{url}/record", {"op": "stop"}), frames))
                window(plan.viewers, False)
            load.quit()
            # decoded once the windows are over, on whichever core is free
            result.files = [_recorded_file(stopped, sent) for stopped, sent in recorded]
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            progress(f"[recording] {result.codec} failed: {result.error}")
            runner._show_logs(folder, progress)


def _describe_result(result: CodecResult) -> str:
    s = result.summary()
    rate = s["bytes_per_second"]
    return (
        f"[recording] {result.codec}: recording costs {number(s['recording_cpu'], '.2%')} of a "
        f"core (min {number(s['recording_cpu_min'], '.2%')}, max "
        f"{number(s['recording_cpu_max'], '.2%')}, {s['recordings']} recordings), "
        f"≈ {number(s['recording_in_viewers'], '.0f')} viewers' worth "
        f"({number(s['viewer_cpu'], '.3%')} each); forwarding to {s['viewers']} viewers "
        f"{number(s['forwarding_cpu'], '.1%')}; "
        f"{number(rate / 1000 if rate else None, ',.0f')} KB/s written; "
        f"{s['decoded_frames']} video frames decoded of {s['sent_frames']} sent "
        f"({s['muxed_frames']} muxed, {s['files_failing']} files failing)"
    )


def measure(plan: RecordingPlan, progress: Progress) -> RecordingResult:
    result = RecordingResult(plan=plan)
    progress(
        f"[recording] N = {plan.viewers}, {plan.window:.0f} s windows, "
        f"{plan.repetitions} recordings per codec"
    )
    for codec in plan.codecs:
        spec = source.SourceSpec(video_codec=codec)
        source.encoded_file(spec)
        progress(f"[recording] source: {spec.describe()}")
        measured = CodecResult(codec=codec, source=spec.describe())
        result.codecs.append(measured)
        _codec(measured, plan, progress)
        if measured.error is not None:
            result.errors.append(f"{codec}: {measured.error}")
            continue
        progress(_describe_result(measured))
        failing = [f.decode_error for f in measured.files if f.decode_error]
        if failing:
            result.errors.append(f"{codec}: a file does not play: {failing[0]}")
    return result


def _sentence(result: CodecResult) -> str:
    s = result.summary()
    rate = s["bytes_per_second"]
    played = (
        f"{s['decoded_frames']:,} video frames decoded of {s['sent_frames']:,} sent"
        if not s["files_failing"]
        else f"{s['files_failing']} of {len(result.files)} files did not decode"
    )
    return (
        f"{CODECS[result.codec]}: **{number(s['recording_cpu'], '.2%')} of a core** "
        f"({number(s['recording_cpu_min'], '.2%')} to {number(s['recording_cpu_max'], '.2%')}; "
        f"≈ {number(s['recording_in_viewers'], '.0f')} viewers' worth at "
        f"{number(s['viewer_cpu'], '.3%')} each; forwarding to the {s['viewers']} viewers "
        f"{number(s['forwarding_cpu'], '.1%')}), "
        f"**{number(rate / 1000 if rate else None, ',.0f')} KB written/s**, {played}"
    )


def markdown(result: RecordingResult, when: datetime.datetime, command: str) -> str:
    """One paragraph, the end marker on its line (an HTML comment inside a paragraph): the
    doc stays under 200 lines."""
    plan = result.plan
    measured = [r for r in result.codecs if r.error is None]
    errors = "".join(f" Error: {error}." for error in result.errors)
    return "\n".join(
        [
            BEGIN,
            f"**Recording** (`{command}`, {when:%Y-%m-%d %H:%M} UTC, {plan.viewers} viewers, "
            f"{plan.window:.0f} s windows; `bench/recording.py` has the method): what "
            f"recording one stream adds to the server's CPU, the median of "
            f"{plan.repetitions} recordings each against the windows without on either side, "
            "and the file: " + "; ".join(_sentence(r) for r in measured) + "." + errors + END,
        ]
    )


def write_docs(result: RecordingResult, when: datetime.datetime, command: str) -> list[Path]:
    write_section(DOCS, BEGIN, END, markdown(result, when, command))
    return [DOCS]


def main(
    quick: bool,
    progress: Progress,
    command: str,
    *,
    report: bool = True,
    json_path: Path | None = None,
    viewers: int | None = None,
    window: float | None = None,
    repetitions: int | None = None,
) -> int:
    plan = QUICK if quick else FULL
    if viewers:
        plan = dataclasses.replace(plan, viewers=viewers)
    if window:
        plan = dataclasses.replace(plan, window=window)
    if repetitions:
        plan = dataclasses.replace(plan, repetitions=repetitions)
    started = time.monotonic()
    result = measure(plan, progress)
    when = datetime.datetime.now(datetime.UTC)
    progress(f"results: {write_step_json('recording', result, when, command, json_path)}")
    if report:
        for written in write_docs(result, when, command):
            progress(f"wrote {written}")
    progress(f"[recording] done in {time.monotonic() - started:.0f} s")
    return 0 if not result.errors else 1
