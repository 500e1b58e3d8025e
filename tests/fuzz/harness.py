"""What the fuzz suite drives a running server with: keep-alive HTTP clients, a live
broadcast (an aiortc WHIP publisher and a decoding aiortc WHEP viewer on their own event
loop), and the server process's resources as /proc shows them."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from testpeers import TestPublisher, TestViewer
from tests.daphne import open_files
from tests.e2e.conftest import OnAirServer
from tests.fuzz.probe_asgi import PROBE_PATH

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return dict(json.loads(self.body))


class HttpPool:
    """Sends requests over a few keep-alive connections at once (one per thread), and
    counts every answer by kind and status."""

    def __init__(self, port: int, workers: int = 8) -> None:
        self.port = port
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.failures: list[tuple[str, Request, Reply]] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="fuzz-http")

    def send(self, request: Request) -> Reply:
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(
                    request.method, request.path, body=request.body, headers=dict(request.headers)
                )
                response = connection.getresponse()
                body = response.read()
            except (ConnectionError, http.client.HTTPException):
                # The server may close a keep-alive connection between requests: a new one.
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
                self._local.connection = None
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        raise AssertionError("unreachable")

    def fuzz(self, kind: str, requests: Iterable[Request]) -> list[Reply]:
        """Send ``requests`` concurrently; counts each answer, keeps every 5xx."""
        batch = list(requests)
        replies = list(self._executor.map(self.send, batch))
        with self._lock:
            for request, reply in zip(batch, replies, strict=True):
                self.statuses[(kind, reply.status)] += 1
                if reply.status >= 500:
                    self.failures.append((kind, request, reply))
        return replies

    def inputs(self, kind: str) -> int:
        return sum(count for (k, _), count in self.statuses.items() if k == kind)

    def hang_up(self) -> None:
        """Close every keep-alive connection (each holds a descriptor in the server)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def close(self) -> None:
        self._executor.shutdown()
        self.hang_up()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None or connection.sock is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection


class Broadcast:
    """A live broadcast for the fuzz to run against: an aiortc publisher over WHIP and a
    decoding aiortc viewer over WHEP, on an event loop of their own in a thread."""

    def __init__(self, server: OnAirServer, pool: HttpPool) -> None:
        self.server = server
        self.pool = pool
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.publisher = TestPublisher(fps=15)
        self.viewer: TestViewer | None = None
        self.locations: list[str] = []

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)

    def video_frames(self) -> int:
        assert self.viewer is not None
        return self.viewer.video.frames

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _post(self, protocol: str, offer: str, headers: dict[str, str]) -> str:
        request = Request(
            "POST",
            f"/{protocol}/{self.server.demo_slug}",
            offer.encode(),
            (("Content-Type", SDP), *headers.items()),
        )
        reply = await self.loop.run_in_executor(None, self.pool.send, request)
        assert reply.status == 201, (protocol, reply)
        self.locations.append(reply.headers["location"])
        return reply.body.decode()

    async def _start(self) -> None:
        key = {"Authorization": f"Bearer {self.server.demo_stream_key}"}
        answer = await self._post("whip", await self.publisher.create_offer(), key)
        await self.publisher.accept_answer(answer)
        self.viewer = TestViewer()
        answer = await self._post("whep", await self.viewer.create_offer(), {})
        await self.viewer.accept_answer(answer)
        assert await self.viewer.wait_for_frames(video=30, within=30), "the viewer saw no video"

    async def _stop(self) -> None:
        for location in reversed(self.locations):
            await self.loop.run_in_executor(None, self.pool.send, Request("DELETE", location))
        if self.viewer is not None:
            await self.viewer.close()
        await self.publisher.close()


@dataclass(frozen=True)
class Resources:
    """A server process's open file descriptors, UDP sockets and asyncio tasks."""

    fds: int
    udp_sockets: int
    tasks: int

    def within(self, baseline: Resources) -> bool:
        return (
            self.fds <= baseline.fds
            and self.udp_sockets <= baseline.udp_sockets
            and self.tasks <= baseline.tasks
        )


def resources(pid: int, pool: HttpPool) -> Resources:
    pool.hang_up()
    tasks = int(pool.send(Request("GET", PROBE_PATH)).json()["tasks"])  # type: ignore[call-overload]
    links = list(open_files(pid).values())
    sockets = {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
    udp: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as rows:
            udp.update(row.split()[9] for row in list(rows)[1:])
    return Resources(fds=len(links), udp_sockets=len(sockets & udp), tasks=tasks)
