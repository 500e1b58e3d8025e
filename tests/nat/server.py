"""The OnAir SFU on the server side of the NAT matrix, run inside a rig namespace.

    ip netns exec <ns> .venv/bin/python -m tests.nat.server --ice-servers JSON \\
        [--public-ip IP] [--port-range LOW-HIGH] [--udp-mux-port PORT]

JSON lines on stdin: ``{"type": "publish"|"view", "id", "stream", "sdp"}``; on stdout:
``{"type": "answer", "id", "sdp"}`` or ``{"type": "reject", "id", "reason"}``. One
``sfu.Router`` per stream; a viewer is answered once its stream has a publisher.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import defaultdict
from typing import Any

from onair.conf import parse_port_range
from sfu import Router, RouterOptions
from sfu.ice import IceServer
from sfu.ice_config import HostNetwork, configure_ice
from sfu.peer import Peer

VIEW_WAIT_SECONDS = 20.0


def apply_host_network(network: HostNetwork) -> None:
    """Make every SFU peer connection of this process gather as ``network`` says.

    A stand-in until ``RouterOptions`` carries a ``HostNetwork`` and ``Peer`` calls
    ``configure_ice`` itself: it runs right after the remote offer is applied, before the
    answer gathers candidates.
    """
    apply_remote = Peer._apply_remote_description

    async def apply_then_configure(session: Peer, sdp: str, sdp_type: str) -> None:
        await apply_remote(session, sdp, sdp_type)
        configure_ice(session.peer_connection, network)

    Peer._apply_remote_description = apply_then_configure  # type: ignore[method-assign,assignment]


class SfuServer:
    def __init__(self, servers: tuple[IceServer, ...]) -> None:
        self._options = RouterOptions(ice_servers=servers, stats_interval_seconds=0)
        self._routers: dict[str, Router] = {}
        self._live: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def _router(self, stream: str) -> Router:
        if stream not in self._routers:
            self._routers[stream] = Router(self._options, router_id=stream)
        return self._routers[stream]

    async def publish(self, stream: str, offer_sdp: str) -> str:
        session = await self._router(stream).publish(offer_sdp)
        self._live[stream].set()
        return session.answer_sdp

    async def subscribe(self, stream: str, offer_sdp: str) -> str:
        await asyncio.wait_for(self._live[stream].wait(), VIEW_WAIT_SECONDS)
        viewer = await self._router(stream).subscribe(offer_sdp)
        assert viewer.answer_sdp is not None
        return viewer.answer_sdp

    async def close(self) -> None:
        await asyncio.gather(*(router.close() for router in self._routers.values()))


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _handle(server: SfuServer, message: dict[str, Any]) -> None:
    try:
        if message["type"] == "publish":
            sdp = await server.publish(message["stream"], message["sdp"])
        else:
            sdp = await server.subscribe(message["stream"], message["sdp"])
    except Exception as exc:
        _emit({"type": "reject", "id": message["id"], "reason": f"{type(exc).__name__}: {exc}"})
        return
    _emit({"type": "answer", "id": message["id"], "sdp": sdp})


async def serve(server: SfuServer) -> None:
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
    parser.add_argument("--udp-mux-port", type=int, default=0, help="0: a socket per peer")
    args = parser.parse_args()
    servers = tuple(
        IceServer(urls=tuple(s["urls"]), username=s.get("username"), credential=s.get("credential"))
        for s in json.loads(args.ice_servers)
    )
    apply_host_network(
        HostNetwork(
            public_ip=args.public_ip,
            port_range=parse_port_range(args.port_range),
            udp_mux_port=args.udp_mux_port or None,
        )
    )
    asyncio.run(serve(SfuServer(servers)))


if __name__ == "__main__":
    main()
