"""Runs servers and clients in the rig, relays their signaling, and tabulates the outcome."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onair.conf import IcePolicy, IceSettings, environment_overrides, settings_from
from sfu.ice import IceServer
from signaling.ice import ice_servers
from tests.nat.rig import CLIENT_SITES, SERVER_SITES, TURN_IP, TURN_PORT, Rig, Site

SESSION_TIMEOUT = 120.0
CLOUD_PORT_RANGE = "40000-40199"
# the SFUs' one shared ICE port, as the servers' setting has it (ONAIR_UDP_MUX_PORT; 0: off)
MUX_PORT = str(settings_from(environment_overrides()).ice.udp_mux_port)
TABLE_BEGIN = "<!-- nat-matrix:begin -->"
TABLE_END = "<!-- nat-matrix:end -->"
REPO = Path(__file__).resolve().parents[2]


def turn_settings(rig: Rig, ttl_seconds: int = 600) -> IceSettings:
    return IceSettings(
        stun_urls=(f"stun:{TURN_IP}:{TURN_PORT}",),
        turn_urls=(f"turn:{TURN_IP}:{TURN_PORT}?transport=udp",),
        turn_secret=rig.turn_secret,
        turn_ttl_seconds=ttl_seconds,
    )


def servers_json(servers: Sequence[IceServer]) -> str:
    return json.dumps([{"urls": list(s.urls), "username": s.username,
                        "credential": s.credential} for s in servers])  # fmt: skip


@dataclass(frozen=True)
class ClientSpec:
    key: str
    site: Site
    server: str
    servers: tuple[IceServer, ...]
    publish: str | None = None
    views: tuple[str, ...] = ()
    policy: IcePolicy = IcePolicy.ALL

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "tests.nat.client", "--ice-servers",
                servers_json(self.servers), "--policy", self.policy.value]  # fmt: skip
        if self.publish:
            argv += ["--publish", self.publish]
        for stream in self.views:
            argv += ["--view", stream]
        return argv


@dataclass
class _Process:
    proc: asyncio.subprocess.Process

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()

    async def messages(self) -> Any:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            yield json.loads(line)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()


async def _spawn(rig: Rig, node: str, argv: list[str]) -> _Process:
    proc = await asyncio.create_subprocess_exec(
        *rig.exec_argv(node, argv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    return _Process(proc)


@dataclass
class SessionResult:
    peers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    # the ports of the host candidates in the SFUs' answers, by SFU placement
    host_ports: dict[str, set[int]] = field(default_factory=dict)


def matrix_clients(rig: Rig) -> list[ClientSpec]:
    """Per SFU placement and client site: one broadcaster, and a viewer of every broadcast."""
    specs = []
    for server in SERVER_SITES:
        streams = tuple(f"{server.name}/{site.name}" for site in CLIENT_SITES)
        for site in CLIENT_SITES:
            key = f"{server.name}/{site.name}"
            servers = ice_servers(user=key.replace("/", "-"), config=turn_settings(rig))
            specs.append(ClientSpec(key, site, server.name, tuple(servers), key, streams))
    return specs


def relay_only_viewer(rig: Rig) -> ClientSpec:
    """A viewer in relay-only mode (``ICE_TRANSPORT_POLICY = "relay"``) behind a plain NAT."""
    site = next(site for site in CLIENT_SITES if site.name == "prc")
    servers = ice_servers(user="relay-only", config=turn_settings(rig))
    return ClientSpec("cloud/prc-relay-only", site, "cloud", servers, None, ("cloud/none",),
                      policy=IcePolicy.RELAY)  # fmt: skip


def expired_credential_viewer(rig: Rig) -> ClientSpec:
    """A relay-only viewer whose TURN credential expired an hour ago: it cannot connect."""
    site = next(site for site in CLIENT_SITES if site.name == "sym")
    settings = turn_settings(rig, ttl_seconds=600)
    servers = ice_servers(user="expired", config=settings, now=time.time() - 3600)
    return ClientSpec("cloud/sym-expired", site, "cloud", servers, None, ("cloud/none",),
                      policy=IcePolicy.RELAY)  # fmt: skip


async def run_session(rig: Rig, clients: Sequence[ClientSpec]) -> SessionResult:
    started = time.monotonic()
    sfu_servers = {
        "cloud": await _spawn(rig, "cloud", [
            sys.executable, "-m", "tests.nat.server", "--ice-servers", "[]",
            "--public-ip", SERVER_SITES[0].wan_ip, "--port-range", CLOUD_PORT_RANGE,
            "--udp-mux-port", MUX_PORT]),
        "home": await _spawn(rig, "home", [
            sys.executable, "-m", "tests.nat.server", "--ice-servers",
            servers_json(ice_servers(user="sfu-home", config=turn_settings(rig))),
            "--udp-mux-port", MUX_PORT]),
    }  # fmt: skip
    processes = {spec.key: await _spawn(rig, spec.site.name, spec.argv()) for spec in clients}
    result = SessionResult()
    done: set[str] = set()
    all_done = asyncio.Event()

    async def pump_client(spec: ClientSpec) -> None:
        async for message in processes[spec.key].messages():
            if message["type"] == "offer":
                await sfu_servers[spec.server].send(
                    {**message, "type": message["role"], "id": f"{spec.key}|{message['id']}"}
                )
            elif message["type"] == "result":
                result.peers[(spec.key, message["id"])] = message
            elif message["type"] == "done":
                done.add(spec.key)
                if len(done) == len(clients):
                    all_done.set()

    async def pump_server(name: str, server: _Process) -> None:
        async for message in server.messages():
            key, _, peer_id = message["id"].partition("|")
            for line in str(message.get("sdp", "")).splitlines():
                if line.startswith("a=candidate:") and " typ host" in line:
                    result.host_ports.setdefault(name, set()).add(int(line.split()[5]))
            await processes[key].send({**message, "id": peer_id})

    pumps = [asyncio.create_task(pump_client(spec)) for spec in clients]
    pumps += [asyncio.create_task(pump_server(*item)) for item in sfu_servers.items()]
    try:
        await asyncio.wait_for(all_done.wait(), SESSION_TIMEOUT)
    finally:
        for process in processes.values():
            if process.proc.returncode is None:
                await process.send({"type": "stop"})
        await asyncio.gather(*(p.proc.wait() for p in processes.values()))
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*(s.stop() for s in sfu_servers.values()))
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class Row:
    server: str
    publisher: str
    viewer: str
    publisher_path: str
    viewer_path: str
    frames: int
    first_frame_ms: float | None
    error: str

    @property
    def ok(self) -> bool:
        return not self.error and self.frames > 0

    @property
    def winner(self) -> str:
        """The least direct candidate type on either leg (relay > srflx/prflx > host)."""
        types = " ".join((self.publisher_path, self.viewer_path))
        if "relay" in types:
            return "relay"
        return "srflx" if "srflx" in types or "prflx" in types else "host"


def _path(peer: dict[str, Any]) -> str:
    return f"{peer['local_type'] or '?'} ⇄ {peer['remote_type'] or '?'}"


def matrix_rows(result: SessionResult) -> list[Row]:
    rows = []
    for server in SERVER_SITES:
        for publisher in CLIENT_SITES:
            stream = f"{server.name}/{publisher.name}"
            published = result.peers.get((stream, f"pub:{stream}"))
            for viewer in CLIENT_SITES:
                viewed = result.peers.get((f"{server.name}/{viewer.name}", f"view:{stream}"))
                if published is None or viewed is None:
                    rows.append(Row(server.name, publisher.name, viewer.name, "", "", 0, None,
                                    "no result"))  # fmt: skip
                    continue
                rows.append(
                    Row(server=server.name, publisher=publisher.name, viewer=viewer.name,
                        publisher_path=_path(published), viewer_path=_path(viewed),
                        frames=viewed["frames"], first_frame_ms=viewed["first_frame_ms"],
                        error=published["error"] or viewed["error"])
                )  # fmt: skip
    return rows


_SERVER_LABEL = {
    "cloud": "1:1 NAT + `PUBLIC_IP`",
    "home": "port-restricted NAT + TURN",
}


def render_table(rows: Sequence[Row], seconds: float) -> str:
    lines = [
        "| SFU behind | publisher NAT | viewer NAT | publisher ⇄ SFU | viewer ⇄ SFU "
        "| won | frames decoded | first frame |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        first = f"{row.first_frame_ms:.0f} ms" if row.first_frame_ms is not None else "-"
        frames = str(row.frames) if row.ok else f"**FAILED**: {row.error or 'no frames'}"
        lines.append(
            f"| {_SERVER_LABEL[row.server]} | {row.publisher} | {row.viewer} "
            f"| {row.publisher_path} | {row.viewer_path} | {row.winner} | {frames} | {first} |"
        )
    lines.append("")
    lines.append(
        f"{sum(r.ok for r in rows)}/{len(rows)} rows connected; whole session "
        f"{seconds:.0f} s. Candidate types are the client's ⇄ the SFU's, as the client's ICE "
        "agent nominated them (`prflx`: learned from a connectivity check)."
    )
    return "\n".join(lines)


def write_table(path: Path, table: str) -> None:
    text = path.read_text()
    head, begin, rest = text.partition(TABLE_BEGIN)
    _, end, tail = rest.partition(TABLE_END)
    if not begin or not end:
        raise ValueError(f"{path} lacks the {TABLE_BEGIN} … {TABLE_END} markers")
    path.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")
