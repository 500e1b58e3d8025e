"""An aiortc broadcaster and/or viewer, run inside a rig namespace by the NAT matrix.

    ip netns exec <ns> .venv/bin/python -m tests.nat.client --ice-servers JSON \\
        [--policy all|relay] [--publish STREAM] [--view STREAM ...]

Signaling is JSON lines: offers go out on stdout (``{"type": "offer", "id", "role",
"stream", "sdp"}``), answers come back on stdin (``{"type": "answer", "id", "sdp"}``).
Each peer then reports one ``{"type": "result", ...}`` line; ``{"type": "stop"}`` on stdin
ends the process (a broadcaster keeps sending until then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from aioice import Connection
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import parse_stun_turn_uri

from onair.conf import IcePolicy
from sfu.ice import IceServer, rtc_configuration
from testpeers import PatternVideoTrack

WIDTH, HEIGHT, FPS = 160, 120, 15
CONNECT_TIMEOUT = 15.0


@dataclass
class PeerResult:
    id: str
    role: str
    stream: str
    connected: bool
    ice_state: str
    local_type: str = ""
    remote_type: str = ""
    frames: int = 0
    first_frame_ms: float | None = None
    error: str = ""


class Client:
    def __init__(self, servers: list[IceServer], policy: IcePolicy) -> None:
        self._servers = servers
        self._policy = policy
        self._answers: dict[str, asyncio.Future[str]] = {}
        self._stopped = asyncio.Event()
        self._peers: list[RTCPeerConnection] = []

    def emit(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def read_stdin(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            message = json.loads(line)
            if message["type"] == "answer":
                self._answers[message["id"]].set_result(message["sdp"])
            elif message["type"] == "reject":
                self._answers[message["id"]].set_exception(RuntimeError(message["reason"]))
            elif message["type"] == "stop":
                break
        self._stopped.set()

    async def _negotiate(self, pc: RTCPeerConnection, peer_id: str, role: str, stream: str) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        self._answers[peer_id] = asyncio.get_running_loop().create_future()
        self.emit(
            {"type": "offer", "id": peer_id, "role": role, "stream": stream,
             "sdp": pc.localDescription.sdp}
        )  # fmt: skip
        sdp = await asyncio.wait_for(self._answers[peer_id], CONNECT_TIMEOUT)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def _peer(self) -> RTCPeerConnection:
        configuration = rtc_configuration(tuple(self._servers))
        configuration.iceTransportPolicy = RTCIceTransportPolicy(self._policy.value)
        pc = RTCPeerConnection(configuration)
        self._peers.append(pc)
        return pc

    async def publish(self, stream: str) -> None:
        pc = self._peer()
        pc.addTransceiver(PatternVideoTrack(WIDTH, HEIGHT, FPS), direction="sendonly")
        result = PeerResult(id=f"pub:{stream}", role="publish", stream=stream,
                            connected=False, ice_state="new")  # fmt: skip
        try:
            await self._negotiate(pc, result.id, "publish", stream)
            await _connected(pc)
        except Exception as exc:
            result.error = _describe(exc) + await self._turn_diagnosis()
        self.emit(_result(pc, result))

    async def view(self, stream: str) -> None:
        pc = self._peer()
        pc.addTransceiver("video", direction="recvonly")
        tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        pc.on("track", tracks.put_nowait)
        result = PeerResult(id=f"view:{stream}", role="view", stream=stream,
                            connected=False, ice_state="new")  # fmt: skip
        started = time.monotonic()
        try:
            await self._negotiate(pc, result.id, "view", stream)
            await _connected(pc)
            track = await asyncio.wait_for(tracks.get(), CONNECT_TIMEOUT)
            while result.frames < FPS:
                await asyncio.wait_for(track.recv(), CONNECT_TIMEOUT)
                if result.frames == 0:
                    result.first_frame_ms = round((time.monotonic() - started) * 1000)
                result.frames += 1
        except Exception as exc:
            result.error = _describe(exc) + await self._turn_diagnosis()
        self.emit(_result(pc, result))

    async def _turn_diagnosis(self) -> str:
        """Why the TURN servers gave no relay candidate, if they did not.

        aioice drops a failed allocation silently (a browser fires ``icecandidateerror``),
        so after a failure the client allocates once more itself to name the cause.
        """
        reasons = [
            f"; {url}: {reason}"
            for server in self._servers
            for url in server.urls
            if url.startswith("turn") and (reason := await _allocate(server, url))
        ]
        return "".join(reasons)

    async def run(self, publish: str | None, views: list[str]) -> None:
        stdin = asyncio.create_task(self.read_stdin())
        tasks = [self.view(stream) for stream in views]
        if publish:
            tasks.insert(0, self.publish(publish))
        await asyncio.gather(*tasks)
        self.emit({"type": "done"})
        await self._stopped.wait()
        stdin.cancel()
        await asyncio.gather(*(pc.close() for pc in self._peers))


async def _connected(pc: RTCPeerConnection) -> None:
    async with asyncio.timeout(CONNECT_TIMEOUT):
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise ConnectionError(f"ICE {pc.iceConnectionState}")
            await asyncio.sleep(0.05)


def _result(pc: RTCPeerConnection, result: PeerResult) -> dict[str, Any]:
    result.ice_state = pc.iceConnectionState
    result.connected = pc.connectionState == "connected"
    connection = _ice_connection(pc)
    pair = connection._nominated.get(1) if connection is not None else None
    if pair is not None:
        result.local_type = pair.local_candidate.type
        result.remote_type = pair.remote_candidate.type
    return {"type": "result", **asdict(result)}


def _ice_connection(pc: RTCPeerConnection) -> Connection | None:
    for transceiver in pc.getTransceivers():
        connection: Connection = transceiver.sender.transport.transport.iceGatherer._connection
        return connection
    return None


async def _allocate(server: IceServer, url: str) -> str:
    parsed = parse_stun_turn_uri(url)
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(
                asyncio.DatagramProtocol,
                server_addr=(parsed["host"], parsed["port"]),
                username=server.username,
                password=server.credential,
                transport=parsed["transport"],
            ),
            5,
        )
    except TransactionFailed as exc:
        code, reason = exc.response.attributes["ERROR-CODE"]
        return f"the TURN server refused the allocation: {code} {reason}"
    except (OSError, TimeoutError) as exc:
        return f"the TURN server is unreachable: {_describe(exc)}"
    transport.close()
    return ""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ice-servers", required=True, help="JSON list of RTCIceServer dicts")
    parser.add_argument("--policy", default="all", choices=[p.value for p in IcePolicy])
    parser.add_argument("--publish")
    parser.add_argument("--view", action="append", default=[])
    args = parser.parse_args()
    servers = [
        IceServer(urls=tuple(s["urls"]), username=s.get("username"), credential=s.get("credential"))
        for s in json.loads(args.ice_servers)
    ]
    client = Client(servers, IcePolicy(args.policy))
    asyncio.run(client.run(args.publish, args.view))


if __name__ == "__main__":
    main()
