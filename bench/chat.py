"""Chat fan-out: the chat messages one daphne process takes and hands to N viewers.

    python -m bench --chat            # ≈ 1 minute, updates docs/BENCHMARKS.md
    python -m bench --chat --quick    # ≈ 20 s (a look, not numbers)

daphne serves OnAir (``onair.asgi:application``, as ``make run`` does, the in-memory channel
layer) on a fresh SQLite database with the demo stream, pinned to the server core. On the
load core, one asyncio process opens N WebSockets to ``/ws/watch/demo/`` (non-browser
clients, no compression) that join the chat (``chat_join``), and a few more that post as the
demo user, logged in by its session cookie (posting through several sockets keeps under each
socket's signaling rate limit; ``CHAT_RATE_MESSAGES`` is off for the run). Every message is
stored (SQLite) and fanned out through the stream's group. Two phases per audience:

- **paced**: posts at ``paced_rate`` per second, as a lively chat; each delivery's latency
  is its arrival at a viewer minus its post (one clock: one process); p50 and p99 over every
  delivery, and the deliveries that never came (within ``DRAIN_SECONDS``).
- **saturated**: ``in_flight`` messages posted and not yet seen by the first viewer, for a
  window: the messages per second the server sustains (each delivered to all N), with
  daphne's CPU over the same window; the latency under that load too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import host, runner
from bench.measure import percentile
from bench.report import number, write_section, write_step_json
from onair.environment import app_environment

Progress = Callable[[str], None]

BEGIN = "<!-- chat:begin -->"
END = "<!-- chat:end -->"
DOCS = runner.REPO / "docs" / "BENCHMARKS.md"
SLUG = "demo"
ASGI_APP = "onair.asgi:application"
POSTERS = 32  # sockets posting: each takes 20 messages/s (signaling's per-socket limit)
CONNECT_BATCH = 50
DRAIN_SECONDS = 10.0
SESSION = (
    "from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY; "
    "from django.contrib.auth.models import User; "
    "from django.contrib.sessions.backends.db import SessionStore; "
    "user = User.objects.get(username='demo'); session = SessionStore(); "
    "session[SESSION_KEY] = str(user.pk); "
    "session[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'; "
    "session[HASH_SESSION_KEY] = user.get_session_auth_hash(); session.create(); "
    "print(session.session_key)"
)


@dataclass(frozen=True)
class ChatPlan:
    audiences: tuple[int, ...]
    window: float  # seconds of each phase
    paced_rate: float  # messages per second in the paced phase
    in_flight: int  # the saturated phase's messages posted and not yet seen


FULL = ChatPlan(audiences=(100, 500), window=10.0, paced_rate=5.0, in_flight=16)
QUICK = ChatPlan(audiences=(20, 50), window=3.0, paced_rate=5.0, in_flight=8)


@dataclass
class Phase:
    messages: int  # posted within the window
    seconds: float
    lost: int  # deliveries of the phase's messages that never came
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    server_cpu: float = 0.0  # share of one core

    @classmethod
    def measured(
        cls, messages: int, seconds: float, lost: int, latency_ms: list[float], cpu: float = 0.0
    ) -> Phase:
        return cls(
            messages, seconds, lost, percentile(latency_ms, 50), percentile(latency_ms, 99), cpu
        )

    def summary(self, viewers: int) -> dict[str, Any]:
        rate = self.messages / self.seconds if self.seconds else None
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "messages_per_second": rate,
            "deliveries_per_second": rate * viewers if rate is not None else None,
            "lost": self.lost,
            "latency_ms_p50": self.latency_ms_p50,
            "latency_ms_p99": self.latency_ms_p99,
            "server_cpu": self.server_cpu,
        }


@dataclass
class Audience:
    viewers: int
    paced: Phase | None = None
    saturated: Phase | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "viewers": self.viewers,
            "paced": self.paced.summary(self.viewers) if self.paced else None,
            "saturated": self.saturated.summary(self.viewers) if self.saturated else None,
            "errors": self.errors,
        }


@dataclass
class ChatResult:
    plan: ChatPlan
    audiences: list[Audience] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"audiences": [a.summary() for a in self.audiences]}


class _Room:
    """The load side of one audience: who received which message when."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.deliveries = 0
        self.seen_first: asyncio.Queue[str] = asyncio.Queue()
        self.errors: list[str] = []
        self.expected = 0  # deliveries awaited by ``drain``
        self.all_in = asyncio.Event()

    def received(self, text: str, first: bool) -> None:
        sent = self.sent.get(text)
        if sent is None:
            return
        self.deliveries += 1
        self.latencies.append((time.monotonic() - sent) * 1000)
        if first:
            self.seen_first.put_nowait(text)
        if self.expected and self.deliveries >= self.expected:
            self.all_in.set()

    async def drain(self, expected: int) -> None:
        """Wait until ``expected`` deliveries have come, or ``DRAIN_SECONDS``."""
        self.expected = expected
        self.all_in.clear()
        if self.deliveries < expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_in.wait(), DRAIN_SECONDS)
        self.expected = 0


async def _connect(url: str, cookie: str | None = None) -> Any:
    import websockets
    from websockets.typing import Origin

    origin = Origin(url.replace("ws://", "http://", 1).split("/ws/", 1)[0])
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else None
    socket = await websockets.connect(
        url,
        origin=origin,
        additional_headers=headers,
        compression=None,
        open_timeout=30,
        close_timeout=2,
        max_queue=None,
    )
    welcome = json.loads(await asyncio.wait_for(socket.recv(), 20))
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"no welcome: {welcome}")
    return socket


async def _viewer(url: str, room: _Room, first: bool) -> tuple[Any, asyncio.Task[None]]:
    socket = await _connect(url)
    await socket.send(json.dumps({"type": "chat_join"}))
    while json.loads(await asyncio.wait_for(socket.recv(), 20))["type"] != "chat_history":
        pass

    async def read() -> None:
        async for raw in socket:
            message = json.loads(raw)
            if message["type"] == "chat_message":
                room.received(message["message"]["text"], first)
            elif message["type"] in ("chat_error", "error"):
                room.errors.append(f"{message['code']}: {message['message']}")

    return socket, asyncio.create_task(read())


async def _poster(url: str, cookie: str, room: _Room) -> tuple[Any, asyncio.Task[None]]:
    socket = await _connect(url, cookie)

    async def read() -> None:
        async for raw in socket:
            message = json.loads(raw)
            if message["type"] in ("chat_error", "error"):
                room.errors.append(f"{message['code']}: {message['message']}")

    return socket, asyncio.create_task(read())


async def _audience(
    url: str, cookie: str, viewers: int, plan: ChatPlan, pid: int, progress: Progress
) -> Audience:
    room = _Room()
    audience = Audience(viewers=viewers)
    sockets: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    try:
        for start in range(0, viewers, CONNECT_BATCH):
            batch = range(start, min(start + CONNECT_BATCH, viewers))
            for socket, reader in await asyncio.gather(
                *(_viewer(url, room, i == 0) for i in batch)
            ):
                sockets.append(socket)
                readers.append(reader)
        posters = []
        for _ in range(POSTERS):
            socket, reader = await _poster(url, cookie, room)
            posters.append(socket)
            sockets.append(socket)
            readers.append(reader)
        progress(f"[chat] {viewers} viewers in the chat, {POSTERS} posting sockets")
        cycle = itertools.cycle(posters)
        counter = itertools.count()

        async def post(phase: str) -> None:
            text = f"{phase}{next(counter)}"
            room.sent[text] = time.monotonic()
            await next(cycle).send(json.dumps({"type": "chat", "text": text}))

        # Paced: a lively chat's rate; latency as viewers see it.
        room.latencies, room.deliveries = [], 0
        before = len(room.sent)
        started = time.monotonic()
        for n in itertools.count():
            due = started + n / plan.paced_rate
            if due - started >= plan.window:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await post("p")
        posted = len(room.sent) - before
        await room.drain(posted * viewers)
        audience.paced = Phase.measured(
            posted, plan.window, posted * viewers - room.deliveries, list(room.latencies)
        )
        while not room.seen_first.empty():
            room.seen_first.get_nowait()

        # Saturated: keep in_flight messages ahead of the first viewer for a window.
        room.latencies, room.deliveries = [], 0
        before = len(room.sent)
        for _ in range(plan.in_flight):
            await post("s")
        cpu_before = host.sample(pid)
        started = time.monotonic()
        posted_in_window = 0
        while time.monotonic() - started < plan.window:
            await asyncio.wait_for(room.seen_first.get(), 20)
            await post("s")
            posted_in_window += 1
        elapsed = time.monotonic() - started
        cpu = host.cpu_fraction(cpu_before, host.sample(pid))
        posted = len(room.sent) - before
        await room.drain(posted * viewers)
        audience.saturated = Phase.measured(
            posted_in_window, elapsed, posted * viewers - room.deliveries, list(room.latencies), cpu
        )
        audience.errors = sorted(set(room.errors))[:5]
    finally:
        for socket in sockets:
            await socket.close()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return audience


def _shell(env: dict[str, str], code: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=runner.REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.strip()


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=runner.REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def measure(plan: ChatPlan, progress: Progress) -> ChatResult:
    result = ChatResult(plan=plan)
    server_core, load_core = host.cores()
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as name:
        folder = Path(name)
        env = app_environment(
            database_url=f"sqlite:///{folder / 'db.sqlite3'}",
            ONAIR_CHAT_RATE_MESSAGES="0",
            ONAIR_MAX_SESSIONS_PER_ADDRESS="0",
        )
        _manage(env, "migrate", "--noinput", "-v0")
        _manage(env, "onair_demo")
        cookie = _shell(env, SESSION).splitlines()[-1]
        port = runner.free_port()
        log = open(folder / "daphne.log", "w")  # noqa: SIM115 - closed below
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP],
            cwd=runner.REPO,
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=lambda: host.pin(server_core),
        )
        affinity = os.sched_getaffinity(0)
        try:
            runner._wait_for_port(port, 30)
            host.pin(load_core)
            url = f"ws://127.0.0.1:{port}/ws/watch/{SLUG}/"
            for viewers in plan.audiences:
                try:
                    audience = asyncio.run(
                        _audience(url, cookie, viewers, plan, daphne.pid, progress)
                    )
                except Exception as exc:
                    result.errors.append(f"{viewers} viewers: {type(exc).__name__}: {exc}")
                    progress(f"[chat] {viewers} viewers failed: {exc}")
                    continue
                result.audiences.append(audience)
                s = audience.summary()
                progress(
                    f"[chat] {viewers} viewers: "
                    f"{number(s['saturated']['messages_per_second'], '.0f')} messages/s "
                    f"saturated (daphne {s['saturated']['server_cpu']:.0%}), paced latency "
                    f"p50 {number(s['paced']['latency_ms_p50'], '.1f')} ms, "
                    f"p99 {number(s['paced']['latency_ms_p99'], '.1f')} ms, "
                    f"{s['paced']['lost']} lost"
                )
        finally:
            os.sched_setaffinity(0, affinity)
            daphne.terminate()
            daphne.wait(10)
            log.close()
    return result


def _sentence(audience: Audience) -> str:
    s = audience.summary()
    paced, saturated = s["paced"], s["saturated"]
    lost = paced["lost"] + saturated["lost"]
    return (
        f"{audience.viewers} viewers: **{number(saturated['messages_per_second'], ',.0f')} "
        f"messages/s** ({number(saturated['deliveries_per_second'], ',.0f')} deliveries/s, "
        f"daphne at {saturated['server_cpu']:.0%} of its core; latency then p50 "
        f"{number(saturated['latency_ms_p50'], ',.0f')} ms, p99 "
        f"{number(saturated['latency_ms_p99'], ',.0f')} ms), and at "
        f"{paced['messages_per_second'] or 0:.0f} messages/s "
        f"delivery latency **p50 {number(paced['latency_ms_p50'], '.1f')} ms, p99 "
        f"{number(paced['latency_ms_p99'], '.1f')} ms**"
        + (f", {lost} deliveries lost" if lost else ", none lost")
    )


def markdown(result: ChatResult, when: datetime.datetime, command: str) -> str:
    """One paragraph, the end marker on its line: the doc stays under 200 lines."""
    plan = result.plan
    errors = "".join(f" Error: {error}." for error in result.errors)
    return "\n".join(
        [
            BEGIN,
            f"**Chat fan-out** (`{command}`, {when:%Y-%m-%d %H:%M} UTC, {plan.window:.0f} s "
            "windows; `bench/chat.py` has the method): chat messages one daphne process "
            "stores and fans out to N WebSocket viewers, at saturation and at a lively "
            "chat's rate: "
            + "; ".join(_sentence(a) for a in result.audiences)
            + "."
            + errors
            + END,
        ]
    )


def write_docs(result: ChatResult, when: datetime.datetime, command: str) -> list[Path]:
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
    plan = QUICK if quick else FULL
    if viewers:
        plan = dataclasses.replace(plan, audiences=tuple(viewers))
    if window:
        plan = dataclasses.replace(plan, window=window)
    started = time.monotonic()
    result = measure(plan, progress)
    when = datetime.datetime.now(datetime.UTC)
    progress(f"results: {write_step_json('chat', result, when, command, json_path)}")
    if report and result.audiences:
        for written in write_docs(result, when, command):
            progress(f"wrote {written}")
    progress(f"[chat] done in {time.monotonic() - started:.0f} s")
    failed = result.errors or any(a.errors for a in result.audiences)
    return 1 if failed else 0
