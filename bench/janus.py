"""Janus 1.1.2 (Debian ``janus``) as a server under test: install, configure, drive.

Janus gets its own configuration in a temporary folder: only the streaming plugin with one
RTP mountpoint (VP8 + Opus) fed on loopback, only the HTTP transport on 127.0.0.1, no STUN
server, ICE restricted to this machine's address. Viewers watch through the HTTP API with
one session and one plugin handle per viewer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import http

JANUS = "/usr/bin/janus"
MODULES = Path("/usr/lib/x86_64-linux-gnu/janus")
MOUNTPOINT_ID = 1


class JanusUnavailable(RuntimeError):
    pass


def ensure_installed() -> str:
    """Install Debian's janus when absent; returns its version line."""
    if not os.path.exists(JANUS):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise JanusUnavailable("janus is not installed and apt-get is not usable here")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "janus"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise JanusUnavailable(f"{' '.join(command)} failed: {done.stderr[-500:]}")
    version = subprocess.run([JANUS, "--version"], capture_output=True, text=True, check=False)
    return version.stdout.splitlines()[0] if version.stdout else "janus (unknown version)"


def _disable_all_but(folder: str, keep: str) -> str:
    names = sorted(p.name for p in (MODULES / folder).glob("*.so"))
    return ",".join(name for name in names if name != keep)


@dataclass(frozen=True)
class JanusConfig:
    http_port: int
    video_port: int
    audio_port: int
    ice_address: str
    rtp_port_range: str = "30000-39999"


def write_config(folder: Path, config: JanusConfig) -> Path:
    (folder / "janus.jcfg").write_text(
        f"""general: {{
  configs_folder = "{folder}"
  plugins_folder = "{MODULES / "plugins"}"
  transports_folder = "{MODULES / "transports"}"
  events_folder = "{MODULES / "events"}"
  loggers_folder = "{MODULES / "loggers"}"
  debug_level = 3
  session_timeout = 60
}}
media: {{
  rtp_port_range = "{config.rtp_port_range}"
}}
nat: {{
  ice_enforce_list = "{config.ice_address}"
  ignore_mdns = true
}}
plugins: {{ disable = "{_disable_all_but("plugins", "libjanus_streaming.so")}" }}
transports: {{ disable = "{_disable_all_but("transports", "libjanus_http.so")}" }}
events: {{ disable = "{_disable_all_but("events", "")}" }}
loggers: {{ disable = "{_disable_all_but("loggers", "")}" }}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
  json = "plain"
  base_path = "/janus"
  http = true
  port = {config.http_port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{ admin_http = false admin_https = false }}
"""
    )
    (folder / "janus.plugin.streaming.jcfg").write_text(
        f"""general: {{ }}
bench: {{
  type = "rtp"
  id = {MOUNTPOINT_ID}
  description = "OnAir bench source"
  audio = true
  video = true
  audioport = {config.audio_port}
  audioiface = "127.0.0.1"
  audiopt = 111
  audiocodec = "opus"
  audiortpmap = "opus/48000/2"
  videoport = {config.video_port}
  videoiface = "127.0.0.1"
  videopt = 96
  videocodec = "vp8"
  videortpmap = "VP8/90000"
}}
"""
    )
    return folder / "janus.jcfg"


def command(folder: Path) -> list[str]:
    return [JANUS, "-F", str(folder), "-C", str(folder / "janus.jcfg"), "-N"]


Event = dict[str, Any]


class JanusClient:
    """One Janus session over HTTP; one streaming-plugin handle per viewer."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        self._session: int | None = None
        self._transactions = (str(n) for n in itertools.count())
        self._waiting: dict[int, asyncio.Queue[Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _post(self, path: str, message: Event) -> Event:
        message["transaction"] = next(self._transactions)
        reply: Event = await http.post_json(self._base + path, message)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus: {reply.get('error')}")
        return reply

    async def connect(self) -> None:
        for _ in range(100):
            try:
                reply = await self._post("", {"janus": "create"})
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise JanusUnavailable("janus did not answer on its HTTP transport")
        self._session = reply["data"]["id"]
        self._tasks.add(asyncio.create_task(self._poll_events()))
        self._tasks.add(asyncio.create_task(self._keepalive()))

    async def _poll_events(self) -> None:
        while True:
            response = await http.request("GET", f"{self._base}/{self._session}?maxev=10")
            events = response.json()
            for event in events if isinstance(events, list) else [events]:
                queue = self._waiting.get(event.get("sender", -1))
                if queue is not None:
                    queue.put_nowait(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(25)
            await self._post(f"/{self._session}", {"janus": "keepalive"})

    async def watch(
        self,
        send_offer: Callable[[str], Awaitable[str]],
        on_candidate: Callable[[Event], Awaitable[None]],
    ) -> int:
        """Attach a handle and watch; ``send_offer`` turns Janus's offer into an answer."""
        reply = await self._post(
            f"/{self._session}", {"janus": "attach", "plugin": "janus.plugin.streaming"}
        )
        handle: int = reply["data"]["id"]
        events: asyncio.Queue[Event] = asyncio.Queue()
        self._waiting[handle] = events
        path = f"/{self._session}/{handle}"
        await self._post(
            path, {"janus": "message", "body": {"request": "watch", "id": MOUNTPOINT_ID}}
        )
        while True:
            event = await asyncio.wait_for(events.get(), 30)
            if event.get("janus") == "trickle":
                await on_candidate(event["candidate"])
            elif "jsep" in event:
                break
        answer = await send_offer(event["jsep"]["sdp"])
        await self._post(
            path,
            {
                "janus": "message",
                "body": {"request": "start"},
                "jsep": {"type": "answer", "sdp": answer},
            },
        )
        self._tasks.add(asyncio.create_task(self._drain_candidates(events, on_candidate)))
        return handle

    async def _drain_candidates(
        self, events: asyncio.Queue[Event], on_candidate: Callable[[Event], Awaitable[None]]
    ) -> None:
        while True:
            event = await events.get()
            if event.get("janus") == "trickle":
                await on_candidate(event["candidate"])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
