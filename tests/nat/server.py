"""The media server side of the NAT matrix, run inside a rig namespace.

    ip netns exec <ns> .venv/bin/python -m tests.nat.server --ice-servers JSON \\
        [--public-ip IP] [--port-range LOW-HIGH]

JSON lines on stdin: ``{"type": "publish"|"view", "id", "stream", "sdp"}``; on stdout:
``{"type": "answer", "id", "sdp"}`` or ``{"type": "reject", "id", "reason"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from sfu.ice_config import HostNetwork, configure_ice
from signaling.ice import IceServer, aiortc_configuration, parse_port_range

VIEW_WAIT_SECONDS = 20.0


class RelayServer:
    """An aiortc peer per client; viewers get the broadcaster's track through MediaRelay."""

    def __init__(self, servers: list[IceServer], network: HostNetwork) -> None:
        self._servers = servers
        self._network = network
        self._relay = MediaRelay()
        self._tracks: dict[str, asyncio.Future[MediaStreamTrack]] = {}
        self._peers: list[RTCPeerConnection] = []

    def _track(self, stream: str) -> asyncio.Future[MediaStreamTrack]:
        return self._tracks.setdefault(stream, asyncio.get_running_loop().create_future())

    async def publish(self, stream: str, offer_sdp: str) -> str:
        pc = self._peer()
        track = self._track(stream)

        @pc.on("track")
        def on_track(received: MediaStreamTrack) -> None:
            if not track.done():
                track.set_result(received)

        return await self._answer(pc, offer_sdp)

    async def subscribe(self, stream: str, offer_sdp: str) -> str:
        source = await asyncio.wait_for(self._track(stream), VIEW_WAIT_SECONDS)
        pc = self._peer()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(self._relay.subscribe(source))
        return await self._answer(pc, None)

    def _peer(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(aiortc_configuration(self._servers))
        self._peers.append(pc)
        return pc

    async def _answer(self, pc: RTCPeerConnection, offer_sdp: str | None) -> str:
        if offer_sdp is not None:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        configure_ice(pc, self._network)
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self._peers))


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _handle(server: RelayServer, message: dict[str, Any]) -> None:
    try:
        if message["type"] == "publish":
            sdp = await server.publish(message["stream"], message["sdp"])
        else:
            sdp = await server.subscribe(message["stream"], message["sdp"])
    except Exception as exc:
        _emit({"type": "reject", "id": message["id"], "reason": f"{type(exc).__name__}: {exc}"})
        return
    _emit({"type": "answer", "id": message["id"], "sdp": sdp})


async def serve(server: RelayServer) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    while line := await reader.readline():
        task = asyncio.create_task(_handle(server, json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ice-servers", required=True, help="JSON list of RTCIceServer dicts")
    parser.add_argument("--public-ip", default="")
    parser.add_argument("--port-range", default="")
    args = parser.parse_args()
    servers = [
        IceServer(urls=tuple(s["urls"]), username=s.get("username"), credential=s.get("credential"))
        for s in json.loads(args.ice_servers)
    ]
    network = HostNetwork(public_ip=args.public_ip, port_range=parse_port_range(args.port_range))
    asyncio.run(serve(RelayServer(servers, network)))


if __name__ == "__main__":
    main()
