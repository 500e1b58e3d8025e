"""One SFU worker of the bench's multi-core sweep: an origin or an edge ``sfu.Router``.

Two processes stand in for two ``manage.py runsfu`` workers holding one broadcast, with the
same ``sfu.pipe`` between them that cluster mode uses, but none of its Django, PostgreSQL
or Redis around it (they are not on the forwarding path being measured):

- ``--role edge`` opens an ``EdgePipe`` and an ``EdgeRouter``, prints its pipe address
  as a JSON line, and serves ``POST /whep`` (a viewer's offer) and ``POST /pipe`` (the
  origin's pipe address and tracks, sent again whenever they change).
- ``--role origin`` serves ``POST /whip`` (the publisher) and ``POST /whep``; given an
  edge, it pipes the broadcast to it and places each viewer on the worker holding fewer
  (with N viewers, what ``ONAIR_SFU_MAX_VIEWERS_PER_WORKER`` = N/2 would do), handing
  the edge's share the edge's answer.

Both answer ``POST /stats`` with their viewers and pipe packet counters.

    python -m bench.cluster_worker --role edge --port PORT
    python -m bench.cluster_worker --role origin --port PORT [--edge URL,HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

import sfu
from bench import http, native_forwarding, udp_mux_port
from sfu.ice_config import HostNetwork
from sfu.pipe import (
    EdgePipe,
    EdgeRouter,
    OriginPipe,
    PipeTrack,
    decode_tracks,
    encode_tracks,
)

PIPE_HOST = "127.0.0.1"
ROUTER_ID = "bench"


def _sdp(answer: str | None) -> http.Response:
    if answer is None:
        return http.Response(500, b"no answer")
    return http.Response(201, answer.encode(), {"Content-Type": "application/sdp"})


def _json(message: dict[str, Any]) -> http.Response:
    return http.Response(200, json.dumps(message).encode(), {"Content-Type": "application/json"})


def _options(worker_index: int) -> sfu.RouterOptions:
    """As ``runsfu --workers 2`` configures its workers (the origin 0, the edge 1)."""
    mux_port = udp_mux_port()
    return sfu.RouterOptions(
        native_forwarding=native_forwarding(),
        host_network=HostNetwork(udp_mux_port=mux_port + worker_index if mux_port else None),
    )


class _Edge:
    def __init__(self, pipe: EdgePipe) -> None:
        self.pipe = pipe
        self.router = EdgeRouter(_options(1), router_id=ROUTER_ID, pipe=pipe)

    async def handle(self, path: str, body: bytes) -> http.Response:
        if path == "/whep":
            return _sdp((await self.router.subscribe(body.decode())).answer_sdp)
        if path == "/pipe":
            message = json.loads(body)
            self.pipe.connect((message["origin"][0], int(message["origin"][1])))
            await self.router.set_tracks(decode_tracks(message["tracks"]))
            return _json({})
        if path == "/stats":
            stats = self.pipe.stats()
            return _json(
                {
                    "viewers": len(self.router.viewers),
                    "pipe_packets": stats.packets,
                    "pipe_duplicates": stats.duplicates,
                    "pipe_nacks": stats.nacks,
                }
            )
        return http.Response(404, b"")


class _Origin:
    def __init__(self, edge_url: str | None) -> None:
        self.router = sfu.Router(_options(0))
        self.pipe: OriginPipe | None = None
        self.edge_url = edge_url
        self.origin_viewers = 0
        self.edge_viewers = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def open_pipe(self, edge_pipe: tuple[str, int]) -> None:
        self.pipe = await OriginPipe.open(
            self.router, remote=edge_pipe, host=PIPE_HOST, on_tracks=self._tell_edge
        )

    def _tell_edge(self, tracks: tuple[PipeTrack, ...]) -> None:
        assert self.pipe is not None
        assert self.edge_url is not None
        message = {"origin": list(self.pipe.address), "tracks": encode_tracks(tracks)}
        task = asyncio.ensure_future(http.post_json(f"{self.edge_url}/pipe", message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, path: str, body: bytes) -> http.Response:
        if path == "/whip":
            return _sdp((await self.router.publish(body.decode())).answer_sdp)
        if path == "/whep":
            return await self._place(body)
        if path == "/stats":
            stats = self.pipe.stats() if self.pipe is not None else None
            return _json(
                {
                    "viewers": len(self.router.viewers),
                    "pipe_packets": stats.packets if stats else 0,
                    "pipe_retransmitted": stats.retransmitted if stats else 0,
                }
            )
        return http.Response(404, b"")

    async def _place(self, offer: bytes) -> http.Response:
        # Seats are counted before the answers come back, so concurrent joins split evenly.
        if self.edge_url is not None and self.origin_viewers > self.edge_viewers:
            self.edge_viewers += 1
            response = await http.request(
                "POST", f"{self.edge_url}/whep", offer, content_type="application/sdp"
            )
            if response.status != 201:
                self.edge_viewers -= 1
            return response
        self.origin_viewers += 1
        try:
            viewer = await self.router.subscribe(offer.decode())
        except BaseException:
            self.origin_viewers -= 1
            raise
        return _sdp(viewer.answer_sdp)


async def serve(role: str, port: int, edge: str | None) -> None:
    ready: dict[str, Any] = {"ready": True}
    if role == "edge":
        edge_pipe = await EdgePipe.open(host=PIPE_HOST)
        worker: _Edge | _Origin = _Edge(edge_pipe)
        ready["pipe"] = list(edge_pipe.address)
    else:
        edge_url, edge_address = edge.rsplit(",", 1) if edge else (None, None)
        worker = _Origin(edge_url)
        if edge_address is not None:
            pipe_host, pipe_port = edge_address.rsplit(":", 1)
            await worker.open_pipe((pipe_host, int(pipe_port)))
    server = await http.serve("127.0.0.1", port, worker.handle)
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["origin", "edge"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--edge", help="origin only: the edge's URL,HOST:PORT of its pipe")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.role, args.port, args.edge))


if __name__ == "__main__":
    main()
