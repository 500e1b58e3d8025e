"""Join rate: viewers one daphne process lets join per second of its core, by two paths.

    python -m bench --signaling           # ≈ 3 minutes, updates docs/BENCHMARKS.md
    python -m bench --signaling --quick   # ≈ 30 s, this tree only (a look, not numbers)

daphne serves OnAir (``onair.asgi:application``, as ``make run`` does) on a fresh SQLite
database holding the demo stream, set live; it is pinned to the server core, the clients
(one asyncio process) to the load core. The stream has no publisher, so the SFU makes no
down tracks: this is signaling and the viewer's peer connection, not forwarding (the main
bench measures forwarding). Each client loops one join after the other:

- **WebSocket** (the watch page): open ``/ws/watch/demo/``, wait for ``welcome``, send
  ``watch``, wait for the server's ``offer`` (the SFU has made the viewer's peer
  connection, gathered its candidates and written the offer), close.
- **WHEP** (any WHEP player): ``POST /whep/demo`` with a recvonly offer, read the ``201``
  answer, ``DELETE`` the session (on the same HTTP connection), close. The offer is made
  once by aiortc (audio and video, recvonly, no candidates: a client that trickles them);
  each join sends it with an ICE ufrag and password and a DTLS fingerprint of its own, so
  the server sees a distinct client's offer every time and has nothing to reuse from the
  last one, while the load core is spared a certificate and a peer connection per join.

Each client joins from a loopback address of its own (127.0.0.2, .3, ...), as a crowd's viewers
each come from theirs, and there are no more clients than ``JOIN_CONCURRENCY``: no join waits
in the join queue (``signaling.admission``; the flash-crowd run measures the queue). A join
that the server refuses or that takes over 20 s is a failure. After a short warm-up
round, the rate is completed joins per second over a window, with daphne's CPU (user +
system) in the same window; joins per core-second = joins per second ÷ that CPU share. A
viewer is counted (a database row) only once connected, which these never are; leaving
(close, ``DELETE``) is in the server's CPU too.

The full run measures the tree before the per-join work (``BASELINE``, taken from git;
skipped when the clone lacks it) the same way, first, so before and after come from one
run on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import host
from bench.measure import percentile
from bench.report import DOC, number, write_section, write_step_json
from bench.runner import _wait_for_port, free_port
from onair.environment import app_environment

REPO = Path(__file__).resolve().parent.parent
SLUG = "demo"
ASGI_APP = "onair.asgi:application"
GO_LIVE = (
    "from broadcast.models import Stream; from broadcast.services import stream_go_live; "
    f"stream_go_live(stream=Stream.objects.get(slug={SLUG!r}))"
)
PATHS = ("websocket", "whep")
LABELS = {"websocket": "WebSocket", "whep": "WHEP"}
# The tree before the per-join work (a shared DTLS certificate, no per-join bitrate estimator,
# fewer database and thread trips): the "before" of the full run.
BASELINE = "2fc90cec166fc44d19b63fbef01f0fefab226e0c"
JOIN_TIMEOUT = 20.0
BEGIN = "<!-- signaling:begin -->"
END = "<!-- signaling:end -->"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    clients: int
    window: float
    warm_up: float
    baseline: bool


FULL = Plan(clients=8, window=15.0, warm_up=3.0, baseline=True)
QUICK = Plan(clients=4, window=4.0, warm_up=1.0, baseline=False)


@dataclass(frozen=True)
class SignalingResult:
    """Joins by one path against one daphne process, in a loop, over one window."""

    tree: str  # "this tree" or "before"
    path: str  # one of PATHS
    clients: int
    seconds: float
    joins: int
    failures: int
    server_cpu: float  # share of one core
    join_ms_p50: float | None
    join_ms_p95: float | None

    @property
    def joins_per_second(self) -> float:
        return self.joins / self.seconds

    @property
    def joins_per_core_second(self) -> float | None:
        return self.joins_per_second / self.server_cpu if self.server_cpu else None


@dataclass
class SignalingRun:
    plan: Plan
    results: list[SignalingResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "results": [
                {
                    **dataclasses.asdict(r),
                    "joins_per_second": r.joins_per_second,
                    "joins_per_core_second": r.joins_per_core_second,
                }
                for r in self.results
            ]
        }

    def get(self, tree: str, path: str) -> SignalingResult | None:
        return next((r for r in self.results if r.tree == tree and r.path == path), None)


# --- clients ---------------------------------------------------------------------------------


async def _websocket_join(base: str, offer: str, source: str) -> float:
    import websockets
    from websockets.typing import Origin

    started = time.monotonic()
    # Channels checks the Origin of a browser's WebSocket against ALLOWED_HOSTS.
    url = f"ws://{base}/ws/watch/{SLUG}/"
    origin = Origin(f"http://{base}")
    async with websockets.connect(
        url, origin=origin, open_timeout=20, close_timeout=2, local_addr=(source, 0)
    ) as socket:
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), JOIN_TIMEOUT))
            if message.get("type") == "welcome":
                await socket.send(json.dumps({"type": "watch"}))
            if message.get("type") == "offer":
                return (time.monotonic() - started) * 1000
            if message.get("type") == "error":
                raise RuntimeError(message)


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    target: str,
    host_header: str,
    body: bytes = b"",
    content_type: str = "",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a kept-alive connection: status, headers, body."""
    head = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    head.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    content = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, content


async def _whep_join(base: str, offer: str, source: str) -> float:
    host_name, _, port = base.rpartition(":")
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host_name, int(port), local_addr=(source, 0))
    try:
        status, headers, _ = await asyncio.wait_for(
            _request(
                reader,
                writer,
                "POST",
                f"/whep/{SLUG}",
                base,
                _client_offer(offer).encode(),
                "application/sdp",
            ),
            JOIN_TIMEOUT,
        )
        if status != 201:
            raise RuntimeError(f"POST answered {status}")
        joined = (time.monotonic() - started) * 1000
        status, _, _ = await asyncio.wait_for(
            _request(reader, writer, "DELETE", headers["location"], base), JOIN_TIMEOUT
        )
        if status != 200:
            raise RuntimeError(f"DELETE answered {status}")
        return joined
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


_UFRAG = re.compile(r"^a=ice-ufrag:.*$", re.MULTILINE)
_PWD = re.compile(r"^a=ice-pwd:.*$", re.MULTILINE)
_FINGERPRINT = re.compile(r"^a=fingerprint:sha-256 .*$", re.MULTILINE)


def _client_offer(offer: str) -> str:
    """``offer`` as another client's: its own ICE credentials and DTLS fingerprint."""
    fingerprint = ":".join(f"{byte:02X}" for byte in secrets.token_bytes(32))
    offer = _UFRAG.sub(f"a=ice-ufrag:{secrets.token_hex(4)}", offer)
    offer = _PWD.sub(f"a=ice-pwd:{secrets.token_hex(12)}", offer)
    return _FINGERPRINT.sub(f"a=fingerprint:sha-256 {fingerprint}", offer)


async def _recvonly_offer() -> str:
    """A WHEP player's offer made by aiortc, without its candidates (it trickles them)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
    finally:
        await pc.close()
    lines = sdp.splitlines()
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n"


_JOINS = {"websocket": _websocket_join, "whep": _whep_join}


def _source(client: int) -> str:
    """Client ``client``'s own loopback address (127.0.0.2, .3, ...), as a crowd's viewers
    each have theirs: the join queue's cap per address never binds."""
    return f"127.0.0.{2 + client}"


async def _clients(
    path: str, base: str, offer: str, plan: Plan, pid: int
) -> tuple[list[float], int, float, float]:
    """Join times, failures, seconds and daphne's CPU share over the window."""
    join = _JOINS[path]
    times: list[float] = []
    failures = 0

    async def client(until: float, source: str) -> None:
        nonlocal failures
        while time.monotonic() < until:
            try:
                times.append(await join(base, offer, source))
            except Exception:
                failures += 1
                await asyncio.sleep(0.1)

    warm_up_until = time.monotonic() + plan.warm_up
    await asyncio.gather(*(client(warm_up_until, _source(n)) for n in range(plan.clients)))
    times.clear()
    failures = 0
    before = host.sample(pid)
    started = time.monotonic()
    await asyncio.gather(*(client(started + plan.window, _source(n)) for n in range(plan.clients)))
    elapsed = time.monotonic() - started
    return times, failures, elapsed, host.cpu_fraction(before, host.sample(pid))


# --- servers ---------------------------------------------------------------------------------


def _manage(tree: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@contextlib.contextmanager
def _baseline_tree() -> Iterator[Path | None]:
    """The ``BASELINE`` tree from git in a temporary folder, or None if the clone lacks it."""
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{BASELINE}^{{commit}}"], cwd=REPO, capture_output=True
    )
    if found.returncode != 0:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bench-signaling-baseline-") as name:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", BASELINE], cwd=REPO, capture_output=True, check=True
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(name, filter="data")
        yield Path(name)


@contextlib.contextmanager
def _daphne(tree: Path, server_core: int) -> Iterator[tuple[int, int]]:
    """daphne serving ``tree`` with the demo stream live: (port, pid)."""
    with tempfile.TemporaryDirectory(prefix="bench-signaling-") as name:
        folder = Path(name)
        env = app_environment(database_url=f"sqlite:///{folder / 'db.sqlite3'}")
        _manage(tree, env, "migrate", "--noinput", "-v0")
        _manage(tree, env, "onair_demo")
        _manage(tree, env, "shell", "-c", GO_LIVE)
        port = free_port()
        with open(folder / "daphne.log", "w") as log:
            daphne = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
                cwd=tree,
                env=env,
                stdout=log,
                stderr=log,
                preexec_fn=lambda: host.pin(server_core),
            )
            try:
                _wait_for_port(port, 30)
                yield port, daphne.pid
            finally:
                daphne.terminate()
                daphne.wait(10)


def _measure_tree(
    label: str, tree: Path, plan: Plan, offer: str, run: SignalingRun, progress: Progress
) -> None:
    server_core, load_core = host.cores()
    with _daphne(tree, server_core) as (port, pid):
        affinity = os.sched_getaffinity(0)
        host.pin(load_core)
        try:
            for path in PATHS:
                progress(
                    f"[signaling] {label}: {plan.clients} clients joining by {LABELS[path]} "
                    f"for {plan.window:.0f} s"
                )
                times, failures, seconds, cpu = asyncio.run(
                    _clients(path, f"127.0.0.1:{port}", offer, plan, pid)
                )
                result = SignalingResult(
                    tree=label,
                    path=path,
                    clients=plan.clients,
                    seconds=seconds,
                    joins=len(times),
                    failures=failures,
                    server_cpu=cpu,
                    join_ms_p50=percentile(times, 50),
                    join_ms_p95=percentile(times, 95),
                )
                run.results.append(result)
                progress(
                    f"[signaling] {label}, {LABELS[path]}: {result.joins_per_second:.1f} joins/s, "
                    f"{failures} failed, daphne {cpu:.0%} CPU "
                    f"(≈ {result.joins_per_core_second or 0:.0f} per core-second), "
                    f"join p50 {number(result.join_ms_p50, '.0f')} ms"
                )
        finally:
            os.sched_setaffinity(0, affinity)


def measure(plan: Plan, progress: Progress) -> SignalingRun:
    run = SignalingRun(plan=plan)
    offer = asyncio.run(_recvonly_offer())
    if plan.baseline:
        with _baseline_tree() as tree:
            if tree is None:
                run.errors.append("the baseline tree is not in this clone: before not measured")
                progress(f"[signaling] {run.errors[-1]}")
            else:
                try:
                    _measure_tree("before", tree, plan, offer, run, progress)
                except Exception as exc:
                    run.errors.append(f"before: {type(exc).__name__}: {exc}")
                    progress(f"[signaling] {run.errors[-1]}")
    try:
        _measure_tree("this tree", REPO, plan, offer, run, progress)
    except Exception as exc:
        run.errors.append(f"this tree: {type(exc).__name__}: {exc}")
        progress(f"[signaling] {run.errors[-1]}")
    return run


# --- report ----------------------------------------------------------------------------------


def _figures(run: SignalingRun, tree: str) -> str:
    parts = []
    for path in PATHS:
        r = run.get(tree, path)
        if r is None:
            continue
        parts.append(
            f"{LABELS[path]} **{number(r.joins_per_core_second, ',.0f')}** "
            f"({r.joins_per_second:.0f}/s at {r.server_cpu:.0%} of its core"
            + (f", {r.failures} failed" if r.failures else "")
            + f"; join p50 {number(r.join_ms_p50, '.0f')} ms, "
            f"p95 {number(r.join_ms_p95, '.0f')} ms)"
        )
    return " and ".join(parts)


def markdown(run: SignalingRun, when: datetime.datetime, command: str) -> str:
    """One paragraph, the end marker on its line: the doc stays under 200 lines."""
    plan = run.plan
    text = (
        f"**Joins per core-second** (`{command}`, {when:%Y-%m-%d %H:%M} UTC, {plan.clients} "
        f"clients, {plan.window:.0f} s windows; `bench/signaling.py` has the method): viewers "
        "one daphne process lets join per second of its core, by " + _figures(run, "this tree")
    )
    if run.get("before", "websocket") or run.get("before", "whep"):
        text += (
            "; before the per-join work (the tree of `bench.signaling.BASELINE`, from git, "
            "measured first in the same run): " + _figures(run, "before")
        )
    errors = "".join(f" Error: {error}." for error in run.errors)
    return "\n".join([BEGIN, text + "." + errors + END])


def write_docs(run: SignalingRun, when: datetime.datetime, command: str) -> list[Path]:
    write_section(DOC, BEGIN, END, markdown(run, when, command))
    return [DOC]


def main(
    quick: bool,
    progress: Progress,
    command: str,
    *,
    report: bool = True,
    json_path: Path | None = None,
    window: float | None = None,
) -> int:
    plan = QUICK if quick else FULL
    if window:
        plan = dataclasses.replace(plan, window=window)
    started = time.monotonic()
    run = measure(plan, progress)
    when = datetime.datetime.now(datetime.UTC)
    progress(f"results: {write_step_json('signaling', run, when, command, json_path)}")
    if report and run.results:
        for written in write_docs(run, when, command):
            progress(f"wrote {written}")
    progress(f"[signaling] done in {time.monotonic() - started:.0f} s")
    failed = run.errors or any(r.failures or not r.joins for r in run.results)
    return 1 if failed else 0
