"""``python -m onair.serve`` bounds a request's body: over ``ONAIR_MAX_REQUEST_BYTES`` it answers
``413`` and closes as the bytes arrive, never receiving the rest; it closes a WebSocket whose
messages waiting pass ``ONAIR_MAX_WEBSOCKET_BACKLOG`` (run as ``make run`` runs it, in a
subprocess); and the daphne and twisted internals it relies on are still there."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest
import websockets
from daphne.http_protocol import HTTPFactory
from daphne.server import Server as DaphneServer
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web import http

from onair.serve import (
    WEBSOCKET_MAX_MESSAGE_BYTES,
    BoundedHTTPFactory,
    BoundedRequest,
    BoundedWebSocketProtocol,
    OnAirServer,
)
from testpeers import TestPublisher, TestViewer, wait_until
from tests.daphne import manage
from tests.onair.conftest import Server, make_run_server

pytestmark = pytest.mark.timeout(120)

LIMIT = 1_048_576  # the default
TOO_LARGE = {
    "error": {
        "status": 413,
        "code": "too_large",
        "message": f"The request body is larger than {LIMIT} bytes.",
        "fields": {},
    }
}


def _read_response(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        try:
            data = connection.recv(65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def _deleted_files(pid: int) -> dict[str, int]:
    """The server's open files that have no name (twisted's and Django's spooled bodies), and
    their sizes."""
    sizes = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path).endswith("(deleted)"):
                sizes[fd] = os.stat(path).st_size
        except FileNotFoundError:
            continue
    return sizes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """One ``make run`` server for the module's tests (each leaves it as it found it: no
    session, no connection, nothing spooled), started once instead of once a test; without
    TURN, which these tests do not need and whose unanswered allocations slow every peer."""
    with make_run_server(
        tmp_path_factory.mktemp("serve"),
        ONAIR_TURN_URLS="",
        ONAIR_TURN_SECRET="",
        ONAIR_METRICS_ALLOWED_ADDRESSES="127.0.0.1",
    ) as served:
        yield served


def _assert_no_error_logged(served: Server) -> None:
    log = served.log()
    assert " ERROR " not in log, log
    assert "Traceback" not in log, log


def _status_and_body(response: bytes) -> tuple[bytes, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


async def test_a_declared_length_over_the_limit_is_refused_before_its_body(
    server: tuple[Server, str],
) -> None:
    served, _ = server
    logged = len(served.log())
    for path in ("/whep/demo", "/api/v1/auth/token/", "/"):
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as connection:
            connection.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000000000\r\n"
                "Expect: 100-continue\r\n\r\n{".encode()
            )
            # Answered with 999,999,999 bytes still to come, then closed (a server waiting
            # for them times out the read instead).
            response = _read_response(connection)
        status, body = _status_and_body(response)
        assert status == b"HTTP/1.1 413 Content Too Large", response
        assert b"Connection: close" in response
        assert b"100 Continue" not in response
        assert body == TOO_LARGE
    assert '"POST /whep/demo" 413' in served.log()[logged:]
    _assert_no_error_logged(served)


async def test_a_chunked_body_is_cut_off_once_past_the_limit(
    server: tuple[Server, str],
) -> None:
    served, _ = server
    piece = b"x" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    most = 64 * LIMIT
    sent, spooled, response = 0, 0, b""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as connection:
        connection.sendall(
            b"POST /whep/demo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < most and not select.select([connection], [], [], 0)[0]:
                connection.sendall(chunk)
                sent += len(piece)
                if sent % LIMIT == 0:
                    spooled = max(spooled, *_deleted_files(served.pid).values(), 0)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection
        # The client was stopped long before it sent 64 MiB (what the kernel's socket buffers
        # took after the limit is all it got away with), and the server never held more than
        # the limit: twisted spools a chunked body to a temporary file, which grew with it.
        assert sent < most
        assert spooled <= LIMIT
        response = _read_response(connection)
    status, body = _status_and_body(response)
    assert status == b"HTTP/1.1 413 Content Too Large", response
    assert body == TOO_LARGE
    # ...and let go of it.
    assert await wait_until(lambda: not _deleted_files(served.pid), 10), _deleted_files(served.pid)
    _assert_no_error_logged(served)


def test_metrics_measure_the_event_loop_from_the_start(server: tuple[Server, str]) -> None:
    """The lag watch starts with the server, not with the first scrape (docs/METRICS.md)."""
    served, _ = server
    time.sleep(0.6)  # at least one of the watch's 0.5 s intervals since the server started
    status, headers, body = served.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    lag = next(
        line for line in body.splitlines() if line.startswith("onair_event_loop_lag_seconds_count")
    )
    assert float(lag.split()[1]) >= 1
    assert "onair_sfu_native_available 1.0" in body
    _assert_no_error_logged(served)


async def test_legitimate_requests_still_pass(server: tuple[Server, str]) -> None:
    served, key = server
    publisher, viewer = TestPublisher(), TestViewer()
    try:
        status, headers, _ = served.request(
            "POST",
            "/whip/demo",
            await publisher.create_offer(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
        )
        assert status == 201
        whip_session = headers["Location"]
        status, headers, answer = served.request(
            "POST", "/whep/demo", await viewer.create_offer(), {"Content-Type": "application/sdp"}
        )
        assert status == 201
        assert answer.startswith("v=0")
        assert served.request("DELETE", headers["Location"])[0] == 200
        assert served.request("DELETE", whip_session)[0] == 200
    finally:
        await publisher.close()
        await viewer.close()
    status, _, body = served.request("GET", "/api/v1/live/")
    assert status == 200
    assert "results" in json.loads(body)
    # A body of exactly the limit reaches the API, which answers it.
    padding = LIMIT - len(json.dumps({"username": "", "password": "x"}))
    at_limit = json.dumps({"username": "u" * padding, "password": "x"})
    assert len(at_limit) == LIMIT
    status, _, body = served.request(
        "POST", "/api/v1/auth/token/", at_limit, {"Content-Type": "application/json"}
    )
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "invalid", body
    # So does a small chunked one.
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as connection:
        connection.sendall(
            b"POST /api/v1/auth/token/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n"
        )
        response = _read_response(connection)
    assert response.startswith(b"HTTP/1.1 400 "), response
    _assert_no_error_logged(served)


def _bytes_read(pid: int) -> int:
    """What the process has read so far (files and sockets), from /proc/<pid>/io."""
    with open(f"/proc/{pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def _settled_bytes_read(pid: int) -> int:
    """``_bytes_read`` once it has stopped growing (for 0.6 s, within 15 s)."""
    last, steady = _bytes_read(pid), 0
    for _ in range(75):
        time.sleep(0.2)
        now = _bytes_read(pid)
        steady = steady + 1 if now == last else 0
        if steady == 3:
            break
        last = now
    return last


def test_a_slow_reader_of_a_large_file_holds_the_server_to_little(
    server: tuple[Server, str],
) -> None:
    """A client that takes a 64 MiB recording slowly (here: not at all, for a while) keeps
    the server from reading it further than a few of its chunks ahead: without flow control
    daphne took each chunk the application sent into twisted's unbounded buffer, and the
    server read the whole file into memory within a second."""
    served, _ = server
    size = 64 * 1024 * 1024
    recording_id = manage(
        served.env,
        "shell",
        "-c",
        f"""
from django.core.files.base import ContentFile
from django.utils import timezone
from broadcast.models import Stream
from recordings.models import Recording
from recordings.storage import recording_storage
recording = Recording.objects.create(
    stream=Stream.objects.get(slug="demo"), state=Recording.State.READY, published=True,
    container="webm", started_at=timezone.now(), ended_at=timezone.now(), size={size},
)
name = recording_storage().save(f"{{recording.pk}}.webm", ContentFile(b""))
with open(recording_storage().path(name), "r+b") as sparse:
    sparse.truncate({size})
recording.file.name = name
recording.save()
print(recording.pk)
""",
    ).split()[-1]
    try:
        with socket.socket() as connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            connection.settimeout(30)
            connection.connect(("127.0.0.1", served.port))
            before = _bytes_read(served.pid)
            connection.sendall(
                f"GET /recordings/{recording_id}/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            head = connection.recv(4096)
            assert head.startswith(b"HTTP/1.1 200 "), head[:200]
            ahead = _settled_bytes_read(served.pid) - before
            # CHUNK_BYTES, twisted's 64 KiB and the kernel's socket buffers: a few MiB
            assert ahead < 16 * 1024 * 1024, ahead
            received = len(head.partition(b"\r\n\r\n")[2])
            while data := connection.recv(1024 * 1024):
                received += len(data)
        assert received == size
    finally:
        manage(
            served.env,
            "shell",
            "-c",
            "from recordings.models import Recording; "
            f"r = Recording.objects.get(pk={recording_id!r}); r.file.delete(); r.delete()",
        )
    _assert_no_error_logged(served)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _watch_socket(served: Server) -> websockets.ClientConnection:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{served.port}/ws/watch/demo/",
        origin=served.base_url,  # type: ignore[arg-type]
        max_size=None,
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "welcome"
    return ws


async def _flood(served: Server, frame: str, most: int) -> tuple[int, int | None, str, int]:
    """Send ``frame`` as fast as possible, at most ``most`` times, reading what comes back:
    how many were sent before the server closed the socket, its close code and reason, and
    the server's largest RSS growth meanwhile (KiB)."""
    ws = await _watch_socket(served)

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass

    reader = asyncio.create_task(read())
    before = peak = _rss_kib(served.pid)
    sent = 0
    try:
        while sent < most:
            await ws.send(frame)
            sent += 1
            if sent % 50 == 0:
                # let the reader answer the server's close in time (on a loaded machine,
                # 200 sends between reads outlasted its close handshake: 1006, no reason)
                await asyncio.sleep(0)
            if sent % 200 == 0:
                peak = max(peak, _rss_kib(served.pid))
    except websockets.ConnectionClosed:
        pass
    await ws.close()  # if the server did not
    await asyncio.wait_for(reader, 30)
    return sent, ws.close_code, ws.close_reason or "", max(peak, _rss_kib(served.pid)) - before


async def test_a_websocket_flood_is_closed_and_holds_little(server: tuple[Server, str]) -> None:
    served, _ = server
    logged = len(served.log())
    # Pings as fast as one client sends them (faster than a consumer handles them), then
    # 60-KB frames, each on a new socket.
    closed = (4429, "More than 1048576 bytes of messages waiting; slow down.")
    _, code, reason, grew_pings = await _flood(served, '{"type": "ping"}', 300_000)
    padded = '{"type": "ping", "pad": "' + "x" * 60_000 + '"}'
    _, *close, grew_frames = await _flood(served, padded, 2_000)
    assert (code, reason) == closed
    assert tuple(close) == closed
    # Measured: 0.3 MiB (8,200 to 20,400 pings sent before the close) and 1.3 MiB (97 to 114
    # frames); without the bound, 81 MiB for 300,000 pings and 100 MiB for 2,000 frames.
    assert grew_pings < 48 * 1024, grew_pings
    assert grew_frames < 48 * 1024, grew_frames
    # The server is free for everyone else at once.
    status, _, body = served.request("GET", "/api/v1/live/")
    assert status == 200
    assert "results" in json.loads(body)
    ws = await _watch_socket(served)
    await ws.send('{"type": "ping"}')
    assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "pong"
    await ws.close()
    assert "websocket closed: its messages waiting passed 1048576 bytes" in served.log()[logged:]
    _assert_no_error_logged(served)


async def test_a_message_over_the_limit_closes_with_1009(server: tuple[Server, str]) -> None:
    served, _ = server
    ws = await _watch_socket(served)
    # Just over OnAir's own limit: the consumer's error, the socket kept.
    await ws.send('{"type": "ping", "pad": "' + "x" * 70_000 + '"}')
    assert json.loads(await asyncio.wait_for(ws.recv(), 30))["code"] == "too_large"
    await ws.send("x" * (WEBSOCKET_MAX_MESSAGE_BYTES + 1))
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 30)
    # autobahn fails the connection (1009) by dropping it: the client sees 1006.
    assert ws.close_code == 1006
    _assert_no_error_logged(served)


def _connection(onair: OnAirServer) -> tuple[http.HTTPChannel, StringTransport]:
    protocol = onair.http_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


async def test_a_response_its_client_stops_taking_waits_then_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the connection's send buffer is full the application's send waits; past
    STALLED_RESPONSE_SECONDS of it the connection is aborted."""
    monkeypatch.setattr("onair.serve.STALLED_RESPONSE_SECONDS", 0.2)
    server = OnAirServer(application=None, endpoints=["tcp:port=0"])
    server.connections = {}
    server.http_factory = HTTPFactory(server)
    protocol, transport = _connection(server)
    channel = protocol._channel
    request = channel.requestFactory(channel)
    assert isinstance(request, BoundedRequest)
    request.handle_reply({"type": "http.response.start", "status": 200, "headers": []})
    request.handle_reply({"type": "http.response.body", "body": b"x" * 10, "more_body": True})

    await request.drained()  # not paused: at once
    channel.pauseProducing()  # what the transport does when its buffer is full
    waiting = asyncio.create_task(request.drained())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    channel.resumeProducing()  # drained
    await asyncio.wait_for(waiting, 1)
    assert not transport.disconnecting

    channel.pauseProducing()
    await asyncio.wait_for(request.drained(), 5)  # gives up after 0.2 s
    assert transport.disconnected  # aborted

    # the last piece unregisters the producer (twisted's finish would complain)
    other = _connection(server)[0]._channel
    finished = other.requestFactory(other)
    other.requests.append(finished)  # as the channel does for a request it reads
    finished.handle_reply({"type": "http.response.start", "status": 200, "headers": []})
    finished.handle_reply({"type": "http.response.body", "body": b"x", "more_body": True})
    assert finished.producer is not None
    finished.handle_reply({"type": "http.response.body", "body": b"y"})
    assert finished.producer is None
    assert finished.finished


def test_the_daphne_and_twisted_internals_it_relies_on() -> None:
    """If this fails, daphne or twisted changed how a request is built or fed its body:
    onair/serve.py must follow."""
    # daphne's Server.run() makes its HTTPFactory with this line, and listens with it; then
    # its WebSocketFactory, with the message sizes it holds.
    run = inspect.getsource(DaphneServer.run)
    assert "self.http_factory = HTTPFactory(self)" in run
    assert "self.ws_factory = WebSocketFactory(self, " in run
    assert "maxMessagePayloadSize=self.websocket_max_message_size" in run
    assert "maxFramePayloadSize=self.websocket_max_frame_size" in run
    # Each message received goes on the application's queue (an asyncio.Queue), in onMessage.
    on_message = inspect.getsource(WebSocketProtocol.onMessage)
    assert on_message.count("self.application_queue.put_nowait(") == 2
    assert "asyncio.Queue()" in inspect.getsource(DaphneServer.create_application)
    # An application's send is the server's handle_reply (ResponseFlow waits there); twisted
    # pauses and resumes a request's push producer with its connection's send buffer, and
    # complains of one left registered when the response finishes.
    assert "send=partial(self.handle_reply, protocol)" in inspect.getsource(
        DaphneServer.create_application
    )
    assert "self._requestProducer.pauseProducing()" in inspect.getsource(
        http.HTTPChannel.pauseProducing
    )
    assert "Producer was not unregistered" in inspect.getsource(http.Request._cleanup)
    # Only HTTP/1.1: the refusal is written as an HTTP/1.1 response.
    assert not http.H2_ENABLED
    server = OnAirServer(application=None, endpoints=["tcp:port=0"])
    server.connections = {}  # made by run()
    server.http_factory = HTTPFactory(server)
    assert isinstance(server.http_factory, BoundedHTTPFactory)
    assert server.max_request_bytes == LIMIT
    server.max_request_bytes = 10
    server.ws_factory = WebSocketFactory(server, server="daphne")
    assert server.ws_factory.protocol is BoundedWebSocketProtocol
    assert server.websocket_max_message_size == WEBSOCKET_MAX_MESSAGE_BYTES
    assert server.websocket_max_frame_size == WEBSOCKET_MAX_MESSAGE_BYTES
    assert server.max_websocket_backlog == 1_048_576

    protocol, transport = _connection(server)
    assert protocol.requestFactory is BoundedRequest
    protocol.dataReceived(
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert transport.disconnecting

    protocol, transport = _connection(server)
    protocol.dataReceived(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    protocol.dataReceived(b"a\r\n0123456789\r\n")
    assert transport.value() == b""
    assert not transport.disconnecting
    protocol.dataReceived(b"1\r\nx\r\n0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert transport.disconnecting
    request = protocol._channel.requests[0]
    assert isinstance(request, BoundedRequest)
    assert request.content.closed
    # The end of the body came with the piece past the limit: the request was not run.
    assert request.method == b"(no method yet)"
