"""Signaling rate: WebSocket connect + join per second that one daphne process sustains.

daphne serves OnAir (``onair.asgi:application``, as ``make run`` does) on a fresh SQLite
database holding the demo stream, set live. Pinned to the server core; clients on the load
core. Each client loops: open ``/ws/watch/demo/``, wait for ``welcome``, send ``watch``, wait
for the server's ``offer`` (the SFU has made its peer connection, gathered candidates and
written the offer; the viewer is counted only once connected, which these never are), close.
The rate is completed joins per second over a window, with daphne's CPU in the same window.

The stream has no publisher, so the SFU makes no down tracks: that is the signaling and the
peer connection, not forwarding (the main bench measures forwarding).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import host
from bench.measure import SignalingResult, percentile
from bench.runner import _wait_for_port, free_port
from onair.environment import app_environment

REPO = Path(__file__).resolve().parent.parent
SLUG = "demo"
ASGI_APP = "onair.asgi:application"
GO_LIVE = (
    "from broadcast.models import Stream; from broadcast.services import stream_go_live; "
    f"stream_go_live(stream=Stream.objects.get(slug={SLUG!r}))"
)


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


async def _join(url: str) -> float:
    import websockets
    from websockets.typing import Origin

    started = time.monotonic()
    # Channels checks the Origin of a browser's WebSocket against ALLOWED_HOSTS.
    origin = Origin(url.replace("ws://", "http://", 1).split("/ws/", 1)[0])
    async with websockets.connect(url, origin=origin, open_timeout=20, close_timeout=2) as socket:
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), 20))
            if message.get("type") == "welcome":
                await socket.send(json.dumps({"type": "watch"}))
            if message.get("type") == "offer":
                return (time.monotonic() - started) * 1000
            if message.get("type") == "error":
                raise RuntimeError(message)


async def _clients(url: str, clients: int, seconds: float, pid: int) -> dict[str, Any]:
    times: list[float] = []
    failures = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal failures
        while time.monotonic() < stop:
            try:
                times.append(await _join(url))
            except Exception:
                failures += 1
                await asyncio.sleep(0.1)

    await asyncio.gather(*(client() for _ in range(clients)))  # warm-up: first round
    stop = time.monotonic() + seconds
    times.clear()
    failures = 0
    before = host.sample(pid)
    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "times": times,
        "failures": failures,
        "seconds": elapsed,
        "cpu": host.cpu_fraction(before, host.sample(pid)),
    }


def measure(clients: int, seconds: float, progress: Callable[[str], None]) -> SignalingResult:

    server_core, load_core = host.cores()
    with tempfile.TemporaryDirectory(prefix="bench-signaling-") as name:
        folder = Path(name)
        env = app_environment(database_url=f"sqlite:///{folder / 'db.sqlite3'}")
        _manage(env, "migrate", "--noinput", "-v0")
        _manage(env, "onair_demo")
        _manage(env, "shell", "-c", GO_LIVE)
        port = free_port()
        log = open(folder / "daphne.log", "w")  # noqa: SIM115 - closed below
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=lambda: host.pin(server_core),
        )
        try:
            _wait_for_port(port, 30)
            progress(f"[signaling] {clients} clients joining /ws/watch/{SLUG}/ for {seconds:.0f} s")
            affinity = os.sched_getaffinity(0)
            host.pin(load_core)
            try:
                outcome = asyncio.run(
                    _clients(
                        f"ws://127.0.0.1:{port}/ws/watch/{SLUG}/", clients, seconds, daphne.pid
                    )
                )
            finally:
                os.sched_setaffinity(0, affinity)
        finally:
            daphne.terminate()
            daphne.wait(10)
            log.close()
    times = outcome["times"]
    return SignalingResult(
        clients=clients,
        seconds=outcome["seconds"],
        joins=len(times),
        failures=outcome["failures"],
        server_cpu=outcome["cpu"],
        join_ms_p50=percentile(times, 50),
        join_ms_p95=percentile(times, 95),
    )
