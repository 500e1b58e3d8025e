"""The multi-core sweep: one broadcast's SFU cost with one worker, and with two piped workers.

    python -m bench --cluster            # ≈ 5 minutes on 2 cores, updates docs/
    python -m bench --cluster --quick    # ≈ 1 minute

A machine's viewers per broadcast grow with its cores only if a second worker (an edge
fed by the origin over ``sfu.pipe``) costs as little per viewer as the first. On 2 cores
the load generator needs one of them, so two workers cannot both be saturated honestly
here; what is measured instead is the cost, as in the main bench: the workers' CPU
seconds (summed over their processes, from /proc) per viewer-second, fitted over N:

- **1 worker**: one ``sfu.Router`` holds every viewer (pinned to the server core);
- **2 workers**: origin (server core) + edge (load core, beside the load generator), the
  viewers split evenly between them, the edge fed through the pipe (``bench.cluster_worker``).

Scaling efficiency = per-viewer cost with 1 worker ÷ per-viewer cost with 2 workers (1.0 is
linear); the pipe's fixed cost = both workers' CPU with no viewers minus one worker's.
Sweeps alternate (1, 2, 1, 2 …) so that a busy neighbour on the machine hits both alike.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import host, http, runner, source
from bench.measure import SATURATED, Fit, linear_fit, percentile
from bench.report import number, write_section

Progress = Callable[[str], None]

BEGIN = "<!-- cluster-sweep:begin -->"
END = "<!-- cluster-sweep:end -->"
DOCS = runner.REPO / "docs" / "BENCHMARKS.md"
PLOT = runner.REPO / "docs" / "img" / "cluster-sweep.png"
RESULTS = runner.REPO / "bench" / "results"


@dataclass(frozen=True)
class ClusterPlan:
    viewers: list[int]
    window: float
    rounds: int


FULL = ClusterPlan(viewers=[0, 20, 40, 60, 80], window=10.0, rounds=2)
# Windows taken while a core was busy beyond the bench, or whose viewers were short of
# packets, are taken again, this many times.
CONTENDED_RETRIES = 2
QUICK = ClusterPlan(viewers=[0, 10, 20], window=4.0, rounds=1)


@dataclass
class ClusterPoint:
    """One steady window of one sweep."""

    workers: int
    round: int
    viewers: int
    on_origin: int
    on_edge: int
    never_connected: int
    seconds: float
    origin_cpu: float  # share of one core
    edge_cpu: float
    load_cpu: float
    core_busy: list[float]  # every core of the machine, whatever ran on it
    loadavg: float
    median_pps: float | None
    source_pps: float
    pipe_pps: float | None  # packets the edge received from the origin, first copies only

    @property
    def workers_cpu(self) -> float:
        return self.origin_cpu + self.edge_cpu

    @property
    def starved(self) -> bool:
        return bool(self.viewers) and (self.median_pps or 0.0) < runner.STARVED * self.source_pps

    @property
    def contended(self) -> bool:
        """A core this busy ran more than the bench (its own share stays well below)."""
        return max(self.core_busy, default=0.0) > SATURATED

    @property
    def saturated(self) -> bool:
        busiest = max(self.origin_cpu, self.edge_cpu + self.load_cpu)
        return busiest > SATURATED or self.starved or self.contended

    @property
    def verdict(self) -> str:
        if self.starved:
            return "no: starved"
        if self.contended:
            return "no: machine busy"
        return "no: saturated" if self.saturated else "yes"


@dataclass
class ClusterResult:
    points: list[ClusterPoint] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def fitted(self, workers: int) -> list[ClusterPoint]:
        return [p for p in self.points if p.workers == workers and not p.saturated]

    def fit(self, workers: int) -> Fit | None:
        points = self.fitted(workers)
        if len({p.viewers for p in points}) < 2:
            return None
        return linear_fit([p.viewers for p in points], [p.workers_cpu for p in points])

    def worker_fit(self, role: str) -> Fit | None:
        """One worker of the pair alone: its CPU over the viewers placed on it."""
        points = self.fitted(2)
        placed = [p.on_origin if role == "origin" else p.on_edge for p in points]
        if len(set(placed)) < 2:
            return None
        cpu = [p.origin_cpu if role == "origin" else p.edge_cpu for p in points]
        return linear_fit([float(n) for n in placed], cpu)

    def idle_cpu(self, workers: int) -> float | None:
        idle = [p.workers_cpu for p in self.points if p.workers == workers and p.viewers == 0]
        return statistics.mean(idle) if idle else None

    def summary(self) -> dict[str, Any]:
        one, two = self.fit(1), self.fit(2)
        idle_one, idle_two = self.idle_cpu(1), self.idle_cpu(2)
        efficiency = one.slope / two.slope if one and two and two.slope > 0 else None
        per_core = 1.0 / one.slope if one and one.slope > 0 else None
        cores = os.cpu_count() or 1
        origin, edge = self.worker_fit("origin"), self.worker_fit("edge")
        return {
            "cpu_per_viewer_1_worker": one.slope if one else None,
            "r2_1_worker": one.r2 if one else None,
            "cpu_per_viewer_2_workers": two.slope if two else None,
            "r2_2_workers": two.r2 if two else None,
            "cpu_per_origin_viewer": origin.slope if origin else None,
            "r2_origin": origin.r2 if origin else None,
            "cpu_per_edge_viewer": edge.slope if edge else None,
            "r2_edge": edge.r2 if edge else None,
            "efficiency": efficiency,
            "viewers_per_core": per_core,
            "pipe_fixed_cpu": idle_two - idle_one
            if idle_one is not None and idle_two is not None
            else None,
            "edge_idle_cpu": statistics.mean(
                [p.edge_cpu for p in self.points if p.workers == 2 and p.viewers == 0] or [0.0]
            ),
            "projected_viewers_per_machine": cores * per_core * efficiency
            if per_core and efficiency
            else None,
            "cores": cores,
        }


def _cores_ticks() -> list[tuple[int, int]]:
    """(busy, total) clock ticks of every core since boot, from /proc/stat."""
    ticks = []
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                numbers = [int(v) for v in values[:8]]
                idle = numbers[3] + numbers[4]  # idle + iowait
                ticks.append((sum(numbers) - idle, sum(numbers)))
    return ticks


def _busy(start: list[tuple[int, int]], end: list[tuple[int, int]]) -> list[float]:
    return [
        (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(start, end, strict=True)
    ]


class _Sweep:
    """The processes of one sweep: workers, source, publisher and load generator."""

    def __init__(self, processes: runner._Processes, workers: int, spec: source.SourceSpec):
        server_core, load_core = host.cores()
        self.edge_pid: int | None = None
        self.edge_url: str | None = None
        edge_arg: list[str] = []
        if workers == 2:
            port = runner.free_port()
            edge = processes.start("edge", self._worker("edge", port), load_core, True)
            assert edge.stdout is not None
            pipe_host, pipe_port = json.loads(runner._read_line(edge.stdout, 30))["pipe"]
            self.edge_pid = edge.pid
            self.edge_url = f"http://127.0.0.1:{port}"
            edge_arg = ["--edge", f"{self.edge_url},{pipe_host}:{pipe_port}"]
        port = runner.free_port()
        origin = processes.start(
            "origin", [*self._worker("origin", port), *edge_arg], server_core, True
        )
        assert origin.stdout is not None
        runner._read_line(origin.stdout, 30)
        self.origin_pid = origin.pid
        self.url = f"http://127.0.0.1:{port}"
        self.publisher = runner._start_source(processes, spec, load_core, "--url", self.url)
        time.sleep(runner.SOURCE_WARMUP_SECONDS)
        self.load = runner._LoadGenerator(
            processes.start(
                "loadgen",
                runner._python("bench.loadgen", "--target", "whep", "--url", self.url),
                load_core,
                True,
            )
        )

    @staticmethod
    def _worker(role: str, port: int) -> list[str]:
        return runner._python("bench.cluster_worker", "--role", role, "--port", str(port))

    def _samples(self) -> dict[str, Any]:
        edge = host.sample(self.edge_pid) if self.edge_pid else None
        return {
            "origin": host.sample(self.origin_pid),
            "edge": edge,
            "load": host.sample(self.load.pid),
            "cores": _cores_ticks(),
            "viewers": self.load.snapshot(),
            "sent": self.publisher.count(),
            "edge_stats": http.post_json_blocking(f"{self.edge_url}/stats")
            if self.edge_url
            else None,
        }

    def point(
        self, workers: int, round_: int, n: int, window: float, progress: Progress
    ) -> ClusterPoint:
        """A steady window at N viewers; measured again while other processes crowd a core or
        the viewers were short of packets (a burst of someone else's work on a pinned core)."""
        self.load.grow(n)
        time.sleep(runner.settle_seconds(window))
        best = self._window(workers, round_, n, window)
        for _ in range(CONTENDED_RETRIES):
            if not (best.contended or best.starved):
                break
            busy = " ".join(f"{b:.0%}" for b in best.core_busy)
            progress(f"[cluster] N={n}: {best.verdict[4:]} (cores {busy}), measuring again")
            again = self._window(workers, round_, n, window)
            if (again.saturated, max(again.core_busy)) < (best.saturated, max(best.core_busy)):
                best = again
        return best

    def _window(self, workers: int, round_: int, n: int, window: float) -> ClusterPoint:
        before = self._samples()
        time.sleep(window)
        after = self._samples()
        placed = http.post_json_blocking(f"{self.url}/stats")
        sent0, sent1 = before["sent"], after["sent"]
        seconds = after["viewers"]["at"] - before["viewers"]["at"]
        viewers0, viewers1 = before["viewers"]["viewers"], after["viewers"]["viewers"]
        pps = [
            (v1[0] - v0[0]) / seconds
            for v0, v1 in zip(viewers0, viewers1, strict=True)
            if v1[2] and v1[0] > 0
        ]
        edge_cpu, pipe_pps = 0.0, None
        if after["edge"] is not None:
            edge_cpu = host.cpu_fraction(before["edge"], after["edge"])
            packets = after["edge_stats"]["pipe_packets"] - before["edge_stats"]["pipe_packets"]
            pipe_pps = packets / seconds
        on_edge = after["edge_stats"]["viewers"] if after["edge_stats"] else 0
        return ClusterPoint(
            workers=workers,
            round=round_,
            viewers=n,
            on_origin=int(placed["viewers"]),
            on_edge=int(on_edge),
            never_connected=sum(1 for v in after["viewers"]["viewers"] if v[0] == 0),
            seconds=seconds,
            origin_cpu=host.cpu_fraction(before["origin"], after["origin"]),
            edge_cpu=edge_cpu,
            load_cpu=host.cpu_fraction(before["load"], after["load"]),
            core_busy=_busy(before["cores"], after["cores"]),
            loadavg=os.getloadavg()[0],
            median_pps=percentile(pps, 50),
            source_pps=(sent1[1] - sent0[1]) / (sent1[0] - sent0[0]),
            pipe_pps=pipe_pps,
        )


def _sweep(
    workers: int, round_: int, plan: ClusterPlan, spec: source.SourceSpec, progress: Progress
) -> list[ClusterPoint]:
    label = f"[cluster {workers} worker{'s' if workers > 1 else ''}, round {round_ + 1}]"
    points: list[ClusterPoint] = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cluster-")))
        processes = runner._Processes(folder)
        stack.callback(processes.stop)
        try:
            sweep = _Sweep(processes, workers, spec)
            for n in plan.viewers:
                point = sweep.point(workers, round_, n, plan.window, progress)
                points.append(point)
                pipe = f", pipe {point.pipe_pps:4.0f} pkt/s" if point.pipe_pps is not None else ""
                progress(
                    f"{label} N={n:>3} ({point.on_origin}+{point.on_edge}): workers "
                    f"{point.workers_cpu:6.1%} CPU (origin {point.origin_cpu:5.1%}, edge "
                    f"{point.edge_cpu:5.1%}), viewer median {point.median_pps or 0:4.0f} pkt/s "
                    f"(source {point.source_pps:4.0f}){pipe}, load gen {point.load_cpu:5.1%}, "
                    f"cores {' '.join(f'{b:.0%}' for b in point.core_busy)}"
                    + (f" — left out of the fit ({point.verdict[4:]})" if point.saturated else "")
                )
                if point.saturated:
                    break
            sweep.load.quit()
        except Exception:
            for log in sorted(folder.glob("*.log")):
                progress(f"--- {log.name} (last lines)\n{log.read_text()[-1500:]}")
            raise
    return points


def run(plan: ClusterPlan, spec: source.SourceSpec, progress: Progress) -> ClusterResult:
    result = ClusterResult()
    for round_ in range(plan.rounds):
        for workers in (1, 2):
            try:
                result.points.extend(_sweep(workers, round_, plan, spec, progress))
            except Exception as exc:
                result.errors.append(f"{workers} workers: {type(exc).__name__}: {exc}")
                progress(f"[cluster] {workers} workers failed: {result.errors[-1]}")
    return result


# --- the report ---------------------------------------------------------------------------


def write_json(
    result: ClusterResult, when: datetime.datetime, command: str, path: Path | None = None
) -> Path:
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"cluster-{when:%Y%m%dT%H%M%SZ}.json"
    document = {
        "command": command,
        "date": when.isoformat(),
        "environment": host.machine(),
        "summary": result.summary(),
        "points": [
            {
                **asdict(p),
                "workers_cpu": p.workers_cpu,
                "saturated": p.saturated,
                "contended": p.contended,
            }
            for p in result.points
        ],
        "errors": result.errors,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _plot(result: ClusterResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for workers, color in ((1, "tab:blue"), (2, "tab:orange")):
        points = [p for p in result.points if p.workers == workers]
        label = "1 worker" if workers == 1 else "2 workers (origin + edge, pipe)"
        for fitted in (True, False):
            shown = [p for p in points if p.saturated != fitted]
            axes.scatter(
                [p.viewers for p in shown],
                [p.workers_cpu * 100 for p in shown],
                color=color,
                facecolors=color if fitted else "none",
            )
        fit = result.fit(workers)
        if fit and points:
            top = max(p.viewers for p in points)
            axes.plot(
                [0, top],
                [fit.intercept * 100, (fit.intercept + fit.slope * top) * 100],
                color=color,
                label=f"{label}: {fit.slope * 100:.3f} %/viewer, r² {fit.r2:.3f}",
            )
    axes.set_xlabel("viewers of one broadcast")
    axes.set_ylabel("SFU workers' CPU (% of one core, summed)")
    axes.set_title("OnAir: cost per viewer with 1 and 2 SFU workers (hollow: not fitted)")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    plt.close(figure)
    return PLOT


def markdown(result: ClusterResult, when: datetime.datetime, command: str) -> str:
    s = result.summary()
    machine = host.machine()
    one, two = s["cpu_per_viewer_1_worker"], s["cpu_per_viewer_2_workers"]
    loads = [p.loadavg for p in result.points]
    lines = [
        BEGIN,
        f"*Generated by `{command}` on {when:%Y-%m-%d %H:%M} UTC — {machine['cores']} cores, "
        f"{machine['cpu_model']}, Linux {machine['kernel']}; in-process `sfu.Router`s in two "
        "`bench.cluster_worker` processes piped by `sfu.pipe`. Load average during the run "
        f"{min(loads, default=0):.1f} to {max(loads, default=0):.1f}.*",
        "",
        "| | 1 worker | 2 workers (origin + edge) |",
        "|---|---:|---:|",
        f"| CPU-seconds per viewer-second (slope) | {number(one, '.5f')} | {number(two, '.5f')} |",
        f"| r² | {number(s['r2_1_worker'], '.3f')} | {number(s['r2_2_workers'], '.3f')} |",
        f"| of which origin alone, per viewer placed on it (r²) | | "
        f"{number(s['cpu_per_origin_viewer'], '.5f')} ({number(s['r2_origin'], '.3f')}) |",
        f"| of which edge alone, per viewer placed on it (r²) | | "
        f"{number(s['cpu_per_edge_viewer'], '.5f')} ({number(s['r2_edge'], '.3f')}) |",
        f"| workers' CPU with no viewer | {number(result.idle_cpu(1), '.1%')} | "
        f"{number(result.idle_cpu(2), '.1%')} |",
        "",
        f"- **Scaling efficiency** (1-worker cost per viewer ÷ 2-worker cost per viewer, "
        f"1.0 = linear): **{number(s['efficiency'], '.2f')}**.",
        f"- **The pipe's fixed cost** (2 workers minus 1, no viewers): "
        f"{number(s['pipe_fixed_cpu'], '.1%')} of a core, of which the idle edge "
        f"{s['edge_idle_cpu']:.1%}.",
        f"- **Projected viewers per machine** = cores · viewers/core · efficiency = "
        f"{s['cores']} · {number(s['viewers_per_core'], '.0f')} · "
        f"{number(s['efficiency'], '.2f')} ≈ "
        f"**{number(s['projected_viewers_per_machine'], '.0f')}** (a projection from the "
        "slopes, not a saturated measurement).",
        "",
        f"![SFU workers' CPU against viewers, 1 and 2 workers](img/{PLOT.name})",
        "",
        *(f"- Error: {error}" for error in result.errors),
        END,
    ]
    return "\n".join(lines)


def write_docs(result: ClusterResult, when: datetime.datetime, command: str) -> list[Path]:
    write_section(DOCS, BEGIN, END, markdown(result, when, command))
    return [DOCS, _plot(result)]


def main(
    quick: bool,
    progress: Progress,
    command: str,
    report: bool = True,
    viewers: list[int] | None = None,
    window: float | None = None,
    json_path: Path | None = None,
) -> int:
    plan = QUICK if quick else FULL
    if viewers:
        plan = ClusterPlan(viewers=viewers, window=plan.window, rounds=plan.rounds)
    if window:
        plan = ClusterPlan(viewers=plan.viewers, window=window, rounds=plan.rounds)
    spec = source.SourceSpec()
    started = time.monotonic()
    progress(f"[cluster] source: {spec.describe()}; N = {plan.viewers}, {plan.rounds} round(s)")
    source.encoded_file(spec)
    result = run(plan, spec, progress)
    when = datetime.datetime.now(datetime.UTC)
    progress(f"results: {write_json(result, when, command, json_path)}")
    s = result.summary()
    progress(
        f"[cluster] per viewer: 1 worker {number(s['cpu_per_viewer_1_worker'], '.5f')} "
        f"(r² {number(s['r2_1_worker'], '.3f')}), 2 workers "
        f"{number(s['cpu_per_viewer_2_workers'], '.5f')} (r² "
        f"{number(s['r2_2_workers'], '.3f')}); efficiency {number(s['efficiency'], '.2f')}; "
        f"pipe fixed {number(s['pipe_fixed_cpu'], '.1%')}; projected "
        f"{number(s['projected_viewers_per_machine'], '.0f')} viewers per machine"
    )
    if report:
        for written in write_docs(result, when, command):
            progress(f"wrote {written}")
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0 if not result.errors else 1
