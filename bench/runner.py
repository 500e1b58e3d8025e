"""One server under test, end to end: start it, feed it the source, grow the audience, measure.

The server runs pinned to one core; the source (FFmpeg replay, plus the bench publisher for
WebRTC-ingesting servers) and the load generator share the other. For each audience size N
the runner lets things settle, then samples the server's CPU time and RSS from /proc and
every viewer's counters over a steady window. For OnAir, a last phase with a fresh server
has decoding viewers join a live publisher that answers keyframe requests (``live_joins``).
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from bench import host, http, janus, source
from bench.measure import Fanout, Latency, Pauses, Point, ServerResult, percentile

REPO = Path(__file__).resolve().parent.parent
SETTLE_SECONDS = 2.0
SOURCE_WARMUP_SECONDS = 2.0
# A forwarder's viewers should all get every packet the publisher sent in the same window:
# below this share, the server was short of CPU for that point. (The source's own rate
# moves by ±8 % over its 30 s loop, so rates of different windows cannot be compared.)
STARVED = 0.95


def settle_seconds(window: float) -> float:
    """The pause before a measurement: ``SETTLE_SECONDS``, or a shorter window's own length
    (the smoke tests' one-second windows show that every step runs, not how fast)."""
    return min(SETTLE_SECONDS, window)


@dataclass(frozen=True)
class Plan:
    viewers: list[int]
    window: float
    latency_at: tuple[int, ...] = ()
    # The latency is traced over whole keyframe intervals of the source, so that every trace
    # holds the same number of keyframes (the largest fan-outs, where the p99 lands).
    trace_keyframe_intervals: int = 3
    # Decoding viewers joining one at a time (after the N = 0 point), a random 0 to
    # ``decoded_join_spacing`` seconds apart (the source's keyframe interval).
    decoded_joins: int = 0
    decoded_join_spacing: float = 2.0
    # The same decoding viewers, joining a live VP8 encoder that answers keyframe requests
    # (``bench.publisher --live``), with a fresh server: OnAir only.
    live_joins: int = 0


Progress = Callable[[str], None]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _read_line(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no answer within {timeout:.0f} s")
    line = stream.readline()
    if not line:
        raise RuntimeError("the process exited")
    return line


class _Processes:
    """Child processes started by one run, stopped in reverse order."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._started: list[subprocess.Popen[str]] = []

    def start(
        self, name: str, command: list[str], core: int, pipes: bool = False
    ) -> subprocess.Popen[str]:
        log = open(self._logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else log,
            stderr=log,
            text=True,
            preexec_fn=partial(host.pin, core),
        )
        self._started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self._started):
            process.terminate()
        for process in reversed(self._started):
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Child:
    """A child process driven by JSON lines: it says hello first, then answers each command."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self.pid = process.pid
        self.hello = self._ask(None, timeout=30)

    def _ask(self, command: dict[str, Any] | None, timeout: float) -> Any:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        if command is not None:
            self._process.stdin.write(json.dumps(command) + "\n")
            self._process.stdin.flush()
        return json.loads(_read_line(self._process.stdout, timeout))


class _LoadGenerator(_Child):
    def grow(self, n: int) -> Any:
        return self._ask({"op": "grow", "n": n}, timeout=60 + n)

    def trace(self, seconds: float) -> list[dict[str, float]]:
        reply = self._ask({"op": "trace", "seconds": seconds}, timeout=30 + seconds)
        return list(reply["arrivals"])

    def join_decoded(self, count: int, spacing: float) -> list[float | None]:
        reply = self._ask(
            {"op": "join_decoded", "count": count, "spacing": spacing},
            timeout=30 + count * (spacing + 20),
        )
        return list(reply["join_ms"])

    def snapshot(self) -> Any:
        return self._ask({"op": "snapshot"}, timeout=30)

    def flood(self, count: int, per_second: float, packets: int) -> Any:
        return self._ask(
            {"op": "flood", "count": count, "per_second": per_second, "packets": packets},
            timeout=60 + 15 * count,
        )

    def stop_flood(self) -> Any:
        return self._ask({"op": "stop_flood"}, timeout=30)

    def quit(self) -> None:
        self._ask({"op": "quit"}, timeout=30)


class _Publisher(_Child):
    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(process)
        self.video_port: int = self.hello["video_port"]
        self.audio_port: int = self.hello["audio_port"]

    def sent(self) -> dict[str, float]:
        return dict(self._ask({"op": "sent"}, timeout=30)["sent"])

    def count(self) -> tuple[float, int]:
        """(monotonic time, packets sent so far)."""
        reply = self._ask({"op": "count"}, timeout=30)
        return float(reply["at"]), int(reply["packets"])

    def video_frames(self) -> int:
        """Video frames sent so far (a WebRTC publisher's only)."""
        return int(self._ask({"op": "count"}, timeout=30)["video_frames"])


class _LivePublisher(_Child):
    """``bench.publisher --live``: says hello once connected to the server."""

    def keyframes(self) -> dict[str, Any]:
        return dict(self._ask({"op": "keyframes"}, timeout=30))


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def _start_source(
    processes: _Processes, spec: source.SourceSpec, load_core: int, *publisher_args: str
) -> _Publisher:
    publisher = _Publisher(
        processes.start("publisher", _python("bench.publisher", *publisher_args), load_core, True)
    )
    processes.start(
        "ffmpeg",
        source.replay_command(
            source.encoded_file(spec), publisher.video_port, publisher.audio_port
        ),
        load_core,
    )
    return publisher


def _start_janus(
    processes: _Processes, folder: Path, spec: source.SourceSpec, core: int, load_core: int
) -> tuple[int, str, _Publisher]:
    config = janus.JanusConfig(
        http_port=free_port(),
        video_port=free_port(socket.SOCK_DGRAM),
        audio_port=free_port(socket.SOCK_DGRAM),
        ice_address=host.host_address(),
    )
    janus.write_config(folder, config)
    server = processes.start("janus", janus.command(folder), core)
    _wait_for_port(config.http_port, 20)
    publisher = _start_source(
        processes, spec, load_core, "--rtp-to", f"{config.video_port},{config.audio_port}"
    )
    return server.pid, f"http://127.0.0.1:{config.http_port}/janus", publisher


def _start_bench_server(
    processes: _Processes, backend: str, core: int, *server_args: str
) -> tuple[int, str]:
    """``bench.server`` with ``backend`` (and ``server_args``), once it listens: (pid, URL)."""
    port = free_port()
    server = processes.start(
        backend,
        _python("bench.server", "--backend", backend, "--port", str(port), *server_args),
        core,
        True,
    )
    assert server.stdout is not None
    _read_line(server.stdout, 30)
    return server.pid, f"http://127.0.0.1:{port}"


def _start_whip_server(
    processes: _Processes,
    backend: str,
    spec: source.SourceSpec,
    core: int,
    load_core: int,
    *server_args: str,
) -> tuple[int, str, _Publisher]:
    pid, url = _start_bench_server(processes, backend, core, *server_args)
    return pid, url, _start_source(processes, spec, load_core, "--url", url)


def _start_load(processes: _Processes, target: str, url: str, core: int) -> _LoadGenerator:
    return _LoadGenerator(
        processes.start(
            "loadgen", _python("bench.loadgen", "--target", target, "--url", url), core, True
        )
    )


@contextmanager
def _run_folder(name: str) -> Iterator[tuple[Path, _Processes]]:
    """A temporary folder for one server's processes and their logs; the processes are
    stopped when it is left."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        processes = _Processes(Path(folder))
        try:
            yield Path(folder), processes
        finally:
            processes.stop()


def _show_logs(folder: Path, progress: Progress) -> None:
    for log in sorted(folder.glob("*.log")):
        progress(f"--- {log.name} (last lines)\n{log.read_text()[-1500:]}")


def _live_joins(name: str, result: ServerResult, plan: Plan, progress: Progress) -> None:
    """Decoding viewers join a fresh server fed by a live encoder that answers PLI."""
    server_core, load_core = host.cores()
    with _run_folder(name) as (folder, processes):
        try:
            _, url = _start_bench_server(processes, name, server_core)
            publisher = _LivePublisher(
                processes.start(
                    "live-publisher",
                    _python("bench.publisher", "--url", url, "--live"),
                    load_core,
                    True,
                )
            )
            # Viewers join a stream that has been live for a while; the load generator
            # starts meanwhile.
            warmed_up = time.monotonic() + SOURCE_WARMUP_SECONDS
            load = _start_load(processes, "whep", url, load_core)
            time.sleep(max(0.0, warmed_up - time.monotonic()))
            result.live_join_ms = load.join_decoded(plan.live_joins, plan.decoded_join_spacing)
            keyframes = publisher.keyframes()
            result.live_keyframe_requests = int(keyframes["requests"])
            result.live_keyframes_sent = int(keyframes["keyframes"])
            result.live_keyframe_answer_ms = [float(ms) for ms in keyframes["answer_ms"]]
            load.quit()
            if None in result.live_join_ms:
                progress(f"[{name}] a live-encoder join decoded nothing: {keyframes}")
                _show_logs(folder, progress)
        except Exception as exc:
            result.live_join_error = f"{type(exc).__name__}: {exc}"
            progress(f"[{name}] live-encoder joins failed: {result.live_join_error}")
            _show_logs(folder, progress)
            return
    joined = [ms for ms in result.live_join_ms if ms is not None]
    answered = result.live_keyframe_answer_ms
    progress(
        f"[{name}] join → first decoded frame, live encoder answering keyframe requests: "
        f"{len(joined)}/{plan.live_joins} viewers, p50 {percentile(joined, 50) or 0:.0f} ms, "
        f"p95 {percentile(joined, 95) or 0:.0f} ms (publisher: "
        f"{result.live_keyframe_requests} keyframe requests, {result.live_keyframes_sent} "
        f"keyframes sent, request → keyframe out p50 {percentile(answered, 50) or 0:.0f} ms)"
    )


def _point(
    n: int,
    server_pid: int,
    load: _LoadGenerator,
    publisher: _Publisher,
    plan: Plan,
    joins: list[dict[str, Any]],
) -> Point:
    time.sleep(settle_seconds(plan.window))
    server0, load0, snap0 = host.sample(server_pid), host.sample(load.pid), load.snapshot()
    sent0 = publisher.count()
    time.sleep(plan.window)
    server1, load1, snap1 = host.sample(server_pid), host.sample(load.pid), load.snapshot()
    sent1 = publisher.count()
    seconds = snap1["at"] - snap0["at"]
    kbps, pps = [], []
    for (packets0, bytes0, _), (packets1, bytes1, connected) in zip(
        snap0["viewers"], snap1["viewers"], strict=True
    ):
        if connected and packets1 > 0:
            kbps.append((bytes1 - bytes0) * 8 / 1000 / seconds)
            pps.append((packets1 - packets0) / seconds)
    return Point(
        viewers=n,
        connected=sum(1 for *_, connected in snap1["viewers"] if connected),
        never_connected=sum(1 for packets, *_ in snap1["viewers"] if packets == 0),
        seconds=seconds,
        server_cpu=host.cpu_fraction(server0, server1),
        server_rss_mb=server1.rss_bytes / 2**20,
        load_cpu=host.cpu_fraction(load0, load1),
        viewer_kbps=kbps,
        viewer_pps=pps,
        join_ms=[j["join_ms"] for j in joins if j["join_ms"] is not None],
        source_pps=(sent1[1] - sent0[1]) / (sent1[0] - sent0[0]),
    )


def _latency(
    n: int,
    load: _LoadGenerator,
    publisher: _Publisher,
    seconds: float,
    fanout_url: str | None,
    settle: float,
) -> Latency:
    time.sleep(settle)
    started = time.monotonic()
    arrivals = load.trace(seconds)
    sent = publisher.sent()
    delays_ms = [
        (at - sent[key]) * 1000 for viewer in arrivals for key, at in viewer.items() if key in sent
    ]
    if fanout_url is None:
        return Latency.of(n, seconds, delays_ms)
    # the server's batches forwarded and garbage collections since the trace started
    # (see ``bench.server.FanoutLog``)
    log = http.post_json_blocking(fanout_url, {"since": started})
    fanout = [
        Fanout.of(kind, [(packets, took) for _, k, packets, took in log if k == kind])
        for kind in ("audio", "video")
    ]
    pauses = Pauses.of([(generation, took) for _, k, generation, took in log if k == "gc"])
    return Latency.of(n, seconds, delays_ms, fanout, pauses)


def run_server(
    name: str, version: str, plan: Plan, spec: source.SourceSpec, progress: Progress
) -> ServerResult:
    result = ServerResult(name=name, version=version)
    server_core, load_core = host.cores()
    with _run_folder(name) as (folder, processes):
        try:
            if name == "janus":
                server_pid, url, publisher = _start_janus(
                    processes, folder, spec, server_core, load_core
                )
                target = "janus"
            else:
                server_pid, url, publisher = _start_whip_server(
                    processes, name, spec, server_core, load_core
                )
                target = "whep"
            time.sleep(SOURCE_WARMUP_SECONDS)
            load = _start_load(processes, target, url, load_core)
            audiences = sorted({*plan.viewers, *plan.latency_at})
            for step, n in enumerate(audiences, 1):
                grown = load.grow(n)
                if n in plan.latency_at:
                    fanout_url = f"{url}/fanout" if name == "onair" else None
                    seconds = plan.trace_keyframe_intervals * spec.keyframe_seconds
                    latency = _latency(
                        n, load, publisher, seconds, fanout_url, settle_seconds(plan.window)
                    )
                    result.latency.append(latency)
                    progress(
                        f"[{name} {step}/{len(audiences)}] N={n:>3}: forwarding latency "
                        f"p50 {latency.p50_ms or 0:.2f} ms, p95 {latency.p95_ms or 0:.2f} ms, "
                        f"p99 {latency.p99_ms or 0:.2f} ms ({latency.samples} packets)"
                    )
                    for fanout in latency.fanout:
                        progress(
                            f"[{name}] N={n:>3}: one {fanout.kind} batch to every viewer took "
                            f"p50 {fanout.p50_ms or 0:.2f} ms, p99 {fanout.p99_ms or 0:.2f} ms, "
                            f"max {fanout.max_ms or 0:.2f} ms ({fanout.batches} batches of up "
                            f"to {fanout.packets_max} packets)"
                        )
                    if latency.gc is not None:
                        progress(f"[{name}] N={n:>3}: the server {latency.gc.describe()}")
                if n not in plan.viewers:
                    continue
                point = _point(n, server_pid, load, publisher, plan, grown["joins"])
                if name != "mediarelay" and point.viewers and point.source_pps:
                    point.starved = (point.median_pps or 0.0) < STARVED * point.source_pps
                result.points.append(point)
                if n == 0 and plan.decoded_joins:
                    result.decoded_join_ms = load.join_decoded(
                        plan.decoded_joins, plan.decoded_join_spacing
                    )
                    decoded = [ms for ms in result.decoded_join_ms if ms is not None]
                    progress(
                        f"[{name}] join → first decoded frame: {len(decoded)}/"
                        f"{plan.decoded_joins} viewers, p50 {percentile(decoded, 50) or 0:.0f} ms,"
                        f" p95 {percentile(decoded, 95) or 0:.0f} ms"
                    )
                progress(
                    f"[{name} {step}/{len(audiences)}] N={n:>3}: "
                    f"{point.connected}/{n} connected, server {point.server_cpu:6.1%} CPU, "
                    f"{point.server_rss_mb:6.1f} MB, viewer median "
                    f"{point.median_kbps or 0:5.0f} kbit/s {point.median_pps or 0:4.0f} pkt/s "
                    f"(source {point.source_pps or 0:4.0f}), "
                    f"load core {point.load_cpu:5.1%}"
                )
                if grown["errors"]:
                    progress(f"[{name}] join errors: {'; '.join(grown['errors'])[:300]}")
                if point.saturated:
                    progress(f"[{name}] saturated or starved at N={n}: larger audiences skipped")
                    break
            load.quit()
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            progress(f"[{name}] failed: {result.error}")
            _show_logs(folder, progress)
    if plan.live_joins and result.error is None:
        _live_joins(name, result, plan, progress)
    return result
