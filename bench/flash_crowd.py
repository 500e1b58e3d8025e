"""Flash crowd: a thousand viewers ask for one broadcast within seconds, while others watch.

    python -m bench --flash-crowd            # ≈ 2 minutes, updates docs/BENCHMARKS.md
    python -m bench --flash-crowd --quick    # ≈ 20 s (a look, not numbers)

daphne serves OnAir (``onair.asgi:application``, as ``make run`` does: the embedded SFU, the
shared UDP port, the join queue of ``signaling.admission`` with its defaults) on a fresh
SQLite database holding the demo stream, pinned to the server core. On the load core:

- the source: FFmpeg replays a small VP8 file (320x180, 15 fps, 150 kbit/s, a keyframe every
  second; its audio dropped), published by ``bench.publisher`` over OnAir's own WHIP with the
  demo stream's key. Few packets per viewer, so that the two cores can carry the crowd's
  forwarding as well as its joins: the joins are what is measured;
- ``watchers`` non-decoding viewers (``bench.loadgen``, WHEP) join first and watch;
- the crowd: ``crowd`` more viewers in ``processes`` load generators, their offers made in
  advance, request (``POST /whep/demo``) evenly spread over ``spread`` seconds.

Each crowd viewer's time to its first keyframe is the arrival of the first packet of a VP8
keyframe (decrypted) after its request; the crowd's 50/95/100 % times are counted from its
first request, a viewer that got none within ``within`` seconds (or was refused) a failure.
The replay answers no keyframe request: a viewer waits for the source's next keyframe
(≤ 1 s). The watchers' forwarding latency (as the main bench traces it: the publisher's send
to a watcher's kernel receive time stamp, matched by payload) is taken over ``before``
seconds before the crowd and over the crowd (its first request to its last first keyframe),
with the watchers' packets per second in each. Both cores' use over the crowd says which
side bounded it: the server's, or the load generators' (aiortc's ICE and DTLS in Python).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import host, runner, source
from bench.measure import percentile
from bench.report import number, write_section, write_step_json
from onair.conf import OnAirSettings
from onair.environment import app_environment

Progress = Callable[[str], None]

BEGIN = "<!-- flash-crowd:begin -->"
END = "<!-- flash-crowd:end -->"
DOCS = runner.REPO / "docs" / "BENCHMARKS.md"
SLUG = "demo"
ASGI_APP = "onair.asgi:application"
# Longer than a run: a replay loop would repeat packets, which the latency trace cannot tell
# apart (``bench.publisher.SendLog``).
SOURCE = source.SourceSpec(
    width=320, height=180, fps=15, video_kbps=150, audio_kbps=32, keyframe_seconds=1, seconds=240
)


@dataclass(frozen=True)
class CrowdPlan:
    crowd: int  # viewers requesting
    spread: float  # seconds over which they request
    processes: int  # load generators the crowd is split among
    watchers: int  # viewers watching before the crowd
    before: float  # seconds of the watchers' trace before the crowd
    within: float  # a crowd viewer's deadline for its first keyframe
    without_queue: bool  # the same crowd again with ``JOIN_CONCURRENCY=0``, for comparison
    settle: float = 2.0  # seconds between the watchers' joins and their first trace


FULL = CrowdPlan(
    crowd=1000, spread=5.0, processes=4, watchers=20, before=6.0, within=45.0, without_queue=True
)
QUICK = CrowdPlan(
    crowd=20,
    spread=1.0,
    processes=2,
    watchers=2,
    before=1.0,
    within=20.0,
    without_queue=False,
    settle=0.5,
)


@dataclass
class Window:
    """The watchers over one window: forwarding latency and packets per second."""

    seconds: float
    packets: int  # traced (matched) video packets, over every watcher
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    watcher_pps: float | None  # median over watchers
    source_pps: float | None  # the publisher's, same window


@dataclass
class CrowdResult:
    plan: CrowdPlan
    join_concurrency: int  # the server's ``JOIN_CONCURRENCY`` (0: no queue)
    requested_seconds: float = 0.0  # first request → last request
    keyframe_seconds: list[float] = field(default_factory=list)  # crowd start → each one's
    join_ms: list[float] = field(default_factory=list)  # each one's request → first keyframe
    answer_ms: list[float] = field(default_factory=list)  # each one's request → WHEP answer
    failures: dict[str, int] = field(default_factory=dict)  # by reason
    before: Window | None = None
    during: Window | None = None
    after: Window | None = None  # once the crowd is in: the same audience, settled
    server_cpu: float = 0.0  # over the crowd, share of the server core
    # daphne's own view over the crowd (its /metrics): how late its event loop ran a timer
    # due every 0.5 s (the largest bucket reached, and the samples later than 100 ms), and
    # its full garbage collections
    loop_lag_max_seconds: float | None = None
    loop_lag_over_100ms: int = 0
    loop_lag_samples: int = 0
    full_collections: int = 0
    load_cpu: float = 0.0  # the load core's processes over the crowd
    errors: list[str] = field(default_factory=list)

    def reached(self, share: float) -> float | None:
        """Seconds from the crowd's first request until ``share`` of it had a keyframe."""
        needed = math.ceil(share * self.plan.crowd)
        times = sorted(self.keyframe_seconds)
        return times[needed - 1] if 0 < needed <= len(times) else None

    def summary(self) -> dict[str, Any]:
        return {
            "crowd": self.plan.crowd,
            "join_concurrency": self.join_concurrency,
            "requested_seconds": round(self.requested_seconds, 3),
            "first_keyframe_seconds": {
                "50": self.reached(0.5),
                "95": self.reached(0.95),
                "100": self.reached(1.0),
            },
            "join_ms_p50": percentile(self.join_ms, 50),
            "join_ms_p95": percentile(self.join_ms, 95),
            "answer_ms_p50": percentile(self.answer_ms, 50),
            "answer_ms_p95": percentile(self.answer_ms, 95),
            "failed": sum(self.failures.values()),
            "failures": self.failures,
            "before": dataclasses.asdict(self.before) if self.before else None,
            "during": dataclasses.asdict(self.during) if self.during else None,
            "after": dataclasses.asdict(self.after) if self.after else None,
            "server_cpu": self.server_cpu,
            "loop_lag_max_seconds": self.loop_lag_max_seconds,
            "loop_lag_over_100ms": self.loop_lag_over_100ms,
            "loop_lag_samples": self.loop_lag_samples,
            "full_collections": self.full_collections,
            "load_cpu": self.load_cpu,
        }


class _Load(runner._LoadGenerator):
    """A load generator driven without waiting for each answer (several at once)."""

    def post(self, command: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()

    def answer(self, timeout: float) -> Any:
        assert self._process.stdout is not None
        return json.loads(runner._read_line(self._process.stdout, timeout))


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=runner.REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


def _start_load(processes: runner._Processes, name: str, url: str, core: int) -> _Load:
    command = runner._python("bench.loadgen", "--target", "whep", "--url", url, "--slug", SLUG)
    return _Load(processes.start(name, command, core, True))


def _window(
    seconds: float,
    delays_ms: list[float],
    snapshots: tuple[Any, Any],
    counts: tuple[tuple[float, int], tuple[float, int]],
) -> Window:
    first, last = snapshots
    elapsed = last["at"] - first["at"]
    pps = [(b[0] - a[0]) / elapsed for a, b in zip(first["viewers"], last["viewers"], strict=True)]
    source_pps = (counts[1][1] - counts[0][1]) / (counts[1][0] - counts[0][0])
    return Window(
        seconds=round(seconds, 3),
        packets=len(delays_ms),
        latency_ms_p50=percentile(delays_ms, 50),
        latency_ms_p99=percentile(delays_ms, 99),
        watcher_pps=percentile(pps, 50),
        source_pps=source_pps,
    )


def _delays_ms(
    arrivals: list[dict[str, float]], sent: dict[str, float], since: float, until: float
) -> list[float]:
    """Each traced packet's send → a watcher's receipt, for packets sent in the window."""
    return [
        (at - sent[key]) * 1000
        for viewer in arrivals
        for key, at in viewer.items()
        if key in sent and since <= sent[key] <= until
    ]


def _scrape(url: str) -> dict[str, float]:
    """daphne's metrics: each sample's value by its name and labels, as written."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


LAG = "onair_event_loop_lag_seconds"


def _server_view(result: CrowdResult, before: dict[str, float], after: dict[str, float]) -> None:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    result.full_collections = int(delta('python_gc_collections_total{generation="2"}'))
    samples = result.loop_lag_samples = int(delta(f"{LAG}_count"))
    result.loop_lag_over_100ms = samples - int(delta(f'{LAG}_bucket{{le="0.1"}}'))
    # The largest lag is at most the smallest bucket bound that holds every sample.
    bounds = sorted(
        float(le) for le in re.findall(rf'{LAG}_bucket{{le="([0-9.]+)"}}', "\n".join(after))
    )
    result.loop_lag_max_seconds = next(
        (b for b in bounds if delta(f'{LAG}_bucket{{le="{b}"}}') >= samples), None
    )


def _failure(error: str | None) -> str:
    if not error:
        return "no keyframe in time"
    code = re.search(r'"code":\s*"(\w+)"', error)
    status = re.search(r"HTTP (\d+)", error)
    return " ".join(part for part in (status and status[1], code and code[1]) if part) or error


def _crowd_times(plan: CrowdPlan, start: float) -> list[list[float]]:
    """Each load generator's request times: the crowd evenly over the spread, interleaved."""
    step = plan.spread / max(plan.crowd - 1, 1)
    return [
        [start + index * step for index in range(k, plan.crowd, plan.processes)]
        for k in range(plan.processes)
    ]


def _run(plan: CrowdPlan, folder: Path, progress: Progress, concurrency: int) -> CrowdResult:
    result = CrowdResult(plan=plan, join_concurrency=concurrency)
    server_core, load_core = host.cores()
    env = app_environment(
        database_url=f"sqlite:///{folder / 'db.sqlite3'}",
        # Every viewer comes from 127.0.0.1: no per-address cap (the join queue's share of
        # places per address stays, as it is not a setting).
        ONAIR_MAX_SESSIONS_PER_ADDRESS="0",
        ONAIR_JOIN_CONCURRENCY=str(concurrency),
        ONAIR_METRICS_ALLOWED_ADDRESSES="127.0.0.1",
    )
    _manage(env, "migrate", "--noinput", "-v0")
    demo = _manage(env, "onair_demo")
    key = re.search(r"Stream key\s+(sk_\S+)", demo)
    if key is None:
        raise RuntimeError(f"unexpected onair_demo output:\n{demo}")
    port = runner.free_port()
    log = open(folder / "daphne.log", "w")  # noqa: SIM115 - closed below
    daphne = subprocess.Popen(
        [sys.executable, "-m", "onair.serve", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
        cwd=runner.REPO,
        env=env,
        stdout=log,
        stderr=log,
        preexec_fn=lambda: host.pin(server_core),
    )
    processes = runner._Processes(folder)
    try:
        runner._wait_for_port(port, 30)
        url = f"http://127.0.0.1:{port}"
        publisher = runner._Publisher(
            processes.start(
                "publisher",
                runner._python(
                    "bench.publisher", "--url", url, "--slug", SLUG, "--key", key[1], "--video-only"
                ),
                load_core,
                True,
            )
        )
        processes.start(
            "ffmpeg",
            source.replay_command(
                source.encoded_file(SOURCE), publisher.video_port, publisher.audio_port
            ),
            load_core,
        )
        watchers = _start_load(processes, "watchers", url, load_core)
        grown = watchers.grow(plan.watchers)
        if grown["errors"]:
            raise RuntimeError(f"watchers: {grown['errors']}")
        crowd = [_start_load(processes, f"crowd{k}", url, load_core) for k in range(plan.processes)]
        for k, load in enumerate(crowd):
            load.post({"op": "prepare", "n": len(range(k, plan.crowd, plan.processes)), "block": k})
        for load in crowd:
            load.answer(60 + plan.crowd)
        progress(
            f"[flash-crowd] {plan.watchers} watching; {plan.crowd} offers made in "
            f"{plan.processes} load generators"
        )
        time.sleep(plan.settle)

        # Before: the watchers alone.
        snapshot, count = watchers.snapshot(), publisher.count()
        traced_from = time.monotonic()
        arrivals = watchers.trace(plan.before)
        sent = publisher.sent()
        result.before = _window(
            plan.before,
            _delays_ms(arrivals, sent, traced_from, time.monotonic()),
            (snapshot, watchers.snapshot()),
            (count, publisher.count()),
        )

        # The crowd, with the watchers traced throughout.
        start = time.monotonic() + 1.0
        for load, times in zip(crowd, _crowd_times(plan, start), strict=True):
            load.post({"op": "crowd", "at": times, "within": plan.within})
        while time.monotonic() < start:
            time.sleep(0.01)
        loads = [publisher.pid, watchers.pid, *(load.pid for load in crowd)]
        samples = [host.sample(pid) for pid in (daphne.pid, *loads)]
        metrics = _scrape(url)
        snapshot, count = watchers.snapshot(), publisher.count()
        watchers.post({"op": "trace_begin"})
        watchers.answer(30)
        joins = [j for load in crowd for j in load.answer(plan.within + 120)["joins"]]
        pids = (daphne.pid, *loads)
        cpu = [host.cpu_fraction(a, host.sample(pid)) for a, pid in zip(samples, pids, strict=True)]
        result.server_cpu, result.load_cpu = cpu[0], sum(cpu[1:])
        _server_view(result, metrics, _scrape(url))
        watchers.post({"op": "trace_end"})
        arrivals = watchers.answer(30)["arrivals"]
        sent = publisher.sent()

        requested = [j["requested"] for j in joins]
        result.requested_seconds = max(requested) - min(requested)
        first = min(requested)
        for join in joins:
            if join["keyframe"] is None:
                reason = _failure(join["error"])
                result.failures[reason] = result.failures.get(reason, 0) + 1
                continue
            result.keyframe_seconds.append(join["keyframe"] - first)
            result.join_ms.append((join["keyframe"] - join["requested"]) * 1000)
        result.answer_ms = [
            (j["answered"] - j["requested"]) * 1000 for j in joins if j["answered"] is not None
        ]
        last = first + (max(result.keyframe_seconds) if result.keyframe_seconds else plan.within)
        result.during = _window(
            last - first,
            _delays_ms(arrivals, sent, first, last),
            (snapshot, watchers.snapshot()),
            (count, publisher.count()),
        )

        # After: the whole audience, the crowd in.
        snapshot, count = watchers.snapshot(), publisher.count()
        traced_from = time.monotonic()
        arrivals = watchers.trace(plan.before)
        sent = publisher.sent()
        result.after = _window(
            plan.before,
            _delays_ms(arrivals, sent, traced_from, time.monotonic()),
            (snapshot, watchers.snapshot()),
            (count, publisher.count()),
        )
        for load in (watchers, *crowd):
            load.quit()
    finally:
        processes.stop()
        daphne.terminate()
        try:
            daphne.wait(10)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait()
        log.close()
    return result


@dataclass
class FlashCrowd:
    """The crowd with the server's join queue as configured by default, and (the full run)
    the same crowd without it."""

    runs: list[CrowdResult] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [error for run in self.runs for error in run.errors]

    def summary(self) -> dict[str, Any]:
        return {"runs": [run.summary() for run in self.runs]}


def _measure_one(plan: CrowdPlan, concurrency: int, progress: Progress) -> CrowdResult:
    progress(f"[flash-crowd] JOIN_CONCURRENCY={concurrency}")
    with tempfile.TemporaryDirectory(prefix="bench-flash-crowd-") as name:
        folder = Path(name)
        try:
            return _run(plan, folder, progress, concurrency)
        except Exception as exc:
            for log in sorted(folder.glob("*.log")):
                progress(f"--- {log.name} (last lines)\n{log.read_text()[-1500:]}")
            result = CrowdResult(plan=plan, join_concurrency=concurrency)
            result.errors.append(f"{type(exc).__name__}: {exc}")
            return result


def measure(plan: CrowdPlan, progress: Progress) -> FlashCrowd:
    default = OnAirSettings().join_concurrency
    runs = FlashCrowd([_measure_one(plan, default, progress)])
    if plan.without_queue:
        runs.runs.append(_measure_one(plan, 0, progress))
    return runs


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "not reached"


def _watched(run: CrowdResult) -> str:
    before, during, after = run.before, run.during, run.after
    if before is None or during is None or after is None:
        return ""
    return (
        f"the {run.plan.watchers} viewers already watching: forwarding latency p99 "
        f"**{number(before.latency_ms_p99, ',.1f')} ms before, "
        f"{number(during.latency_ms_p99, ',.1f')} ms during the crowd**, "
        f"{number(after.latency_ms_p99, ',.1f')} ms once it was in (p50 "
        f"{number(before.latency_ms_p50, ',.1f')} / {number(during.latency_ms_p50, ',.1f')} / "
        f"{number(after.latency_ms_p50, ',.1f')} ms), receiving "
        f"{number(before.watcher_pps, '.1f')} / {number(during.watcher_pps, '.1f')} / "
        f"{number(after.watcher_pps, '.1f')} packets/s of the source's "
        f"{number(before.source_pps, '.1f')} / {number(during.source_pps, '.1f')} / "
        f"{number(after.source_pps, '.1f')}"
    )


def _server(run: CrowdResult) -> str:
    lag = run.loop_lag_max_seconds
    late = f"≤ {lag * 1000:,.0f} ms" if lag is not None else "over 2.5 s"
    return (
        f"daphne used {run.server_cpu:.0%} of its core over the crowd (the load generators "
        f"{run.load_cpu:.0%} of theirs), its event loop ran a 0.5 s timer up to {late} late "
        f"({run.loop_lag_over_100ms} of {run.loop_lag_samples} over 100 ms) and made "
        f"{run.full_collections} full garbage collections"
    )


def _crowd(run: CrowdResult) -> str:
    s = run.summary()
    failures = ", ".join(f"{n} {reason}" for reason, n in sorted(run.failures.items()))
    return (
        f"first keyframe for 50 % after **{_seconds(run.reached(0.5))}**, 95 % after "
        f"**{_seconds(run.reached(0.95))}**, 100 % after **{_seconds(run.reached(1.0))}** "
        f"(each one's request → keyframe p50 {number(s['join_ms_p50'], ',.0f')} ms, p95 "
        f"{number(s['join_ms_p95'], ',.0f')} ms; → WHEP answer p95 "
        f"{number(s['answer_ms_p95'], ',.0f')} ms); **{s['failed']} failed**"
        + (f" ({failures})" if failures else "")
        + "; "
        + _server(run)
    )


def markdown(result: FlashCrowd, when: datetime.datetime, command: str) -> str:
    """One line, both markers on it: the doc stays under 200 lines."""
    queued, *others = result.runs
    plan = queued.plan
    text = (
        f"**Flash crowd** (`{command}`, {when:%Y-%m-%d %H:%M} UTC; `bench/flash_crowd.py` has "
        f"the method): **{plan.crowd:,} WHEP viewers** requested within "
        f"{queued.requested_seconds:.1f} s ({plan.processes} load generators) of one daphne "
        f"process, the source small (VP8 {SOURCE.width}x{SOURCE.height}, {SOURCE.fps} fps, "
        f"{SOURCE.video_kbps} kbit/s, a keyframe every {SOURCE.keyframe_seconds} s, no audio: "
        f"one core forwards to all), with its join queue "
        f"(`ONAIR_JOIN_CONCURRENCY={queued.join_concurrency}`): "
        + _crowd(queued)
        + "; "
        + _watched(queued)
        + "."
    )
    for run in others:
        text += (
            f" The same without the queue (`ONAIR_JOIN_CONCURRENCY={run.join_concurrency}`): "
            + _crowd(run)
            + "; "
            + _watched(run)
            + "."
        )
    errors = "".join(f" Error: {error}." for error in result.errors)
    return BEGIN + text + errors + END


def write_docs(result: FlashCrowd, when: datetime.datetime, command: str) -> list[Path]:
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
) -> int:
    plan = QUICK if quick else FULL
    if viewers:
        plan = dataclasses.replace(plan, crowd=viewers)
    started = time.monotonic()
    progress(
        f"[flash-crowd] {plan.crowd} viewers within {plan.spread:.0f} s, {plan.watchers} "
        f"watching; source {SOURCE.describe()}"
    )
    result = measure(plan, progress)
    when = datetime.datetime.now(datetime.UTC)
    progress(f"results: {write_step_json('flash-crowd', result, when, command, json_path)}")
    for run in result.runs:
        s = run.summary()
        progress(
            f"[flash-crowd] JOIN_CONCURRENCY={run.join_concurrency}: keyframe 50/95/100 %: "
            f"{s['first_keyframe_seconds']}, {s['failed']} failed {run.failures}, latency "
            f"p99 before/during {run.before and run.before.latency_ms_p99} / "
            f"{run.during and run.during.latency_ms_p99} ms, daphne {run.server_cpu:.0%}, "
            f"load {run.load_cpu:.0%}"
        )
    if report and not result.errors:
        for written in write_docs(result, when, command):
            progress(f"wrote {written}")
    progress(f"[flash-crowd] done in {time.monotonic() - started:.0f} s")
    return 1 if result.errors else 0
