"""``python -m onair.serve``: daphne, with a bounded request body and no secret in its log.

daphne (twisted) receives a request's whole body before the ASGI application sees any of it,
spilling it to a temporary file past 100 KB, and Django's handler copies it again: no view
can refuse a body before it is all on the server. This refuses, as the bytes arrive, a body
over ``ONAIR_MAX_REQUEST_BYTES`` with ``413`` and closes the connection.

daphne's access log writes each request's path as received, and a WHIP/WHEP session URL
(``/whip/<slug>/<token>``) is the capability to control that session. This writes the same
log with ``onair.logging.redact`` applied to every path.

daphne puts every WebSocket message it receives on the application's queue, without limit:
a client sending faster than its consumer handles messages made the server hold them all
(hundreds of MB) and work through them long after it left. This closes a socket with
``4429`` once the messages it has waiting pass ``ONAIR_MAX_WEBSOCKET_BACKLOG`` bytes, and
takes messages of at most ``WEBSOCKET_MAX_MESSAGE_BYTES``.

daphne writes each piece of a response body to twisted as the application sends it, and
twisted keeps whatever the client has not taken yet in memory, without limit: a slow client
of a large file (a recording, ``onair.ranged_response``) made the server read all of it
ahead of the client. Here the application's next ``send`` of a streamed body waits while
the connection's send buffer is full, and a connection that takes nothing for
``STALLED_RESPONSE_SECONDS`` is dropped.

On SIGTERM or SIGINT it stops in a few seconds, telling its clients: no new connections;
the viewers of every broadcast it holds hear that the publisher is reconnecting; every
WebSocket is closed with ``4503`` (the pages reconnect with backoff, the studio publishes
again once the server is back); the SFU's routers close; and whatever is still running
``STOP_DEADLINE_SECONDS`` after the signal cannot keep the process alive. On start, a
broadcast left live by a process that died waits out the publisher grace period
(``signaling.lifecycle``). daphne runs no ASGI lifespan: this does it in their place.

``make run`` and ``make run-cluster`` serve with it; so should production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings as django_settings
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from onair.conf import onair_settings
from onair.logging import redact
from signaling.messages import MAX_FRAME_BYTES

# Twice the largest message OnAir takes: one a little over it still gets the consumer's
# ``too_large`` error naming the limit; a larger one fails the connection (autobahn's 1009).
WEBSOCKET_MAX_MESSAGE_BYTES = 2 * MAX_FRAME_BYTES
# What a waiting message costs beyond its payload (the event dict, the str, the queue's slot:
# about 300 bytes measured), so that a flood of tiny messages is bounded too.
WEBSOCKET_MESSAGE_OVERHEAD_BYTES = 1024
CLOSE_BACKLOG = 4429  # the consumers' "too many, reconnect later"
CLOSE_RESTARTING = 4503  # the consumers' "unavailable, reconnect later"
# A stopping server's steps, each bounded: its WebSockets' consumers finishing (viewers
# uncounted), then the SFU's routers closing (WHEP viewers uncounted). By the deadline the
# process exits, whatever still runs.
# Between telling the watch pages their publisher is reconnecting and closing their sockets:
# the consumers pass the group message on (in milliseconds) before the close goes out.
STATUS_DELIVERY_SECONDS = 0.2
SOCKETS_CLOSE_SECONDS = 1.0
ROUTERS_CLOSE_SECONDS = 1.5
STOP_DEADLINE_SECONDS = 4.5
# A streamed response whose client takes nothing for this long is dropped: it holds an open
# file and a task meanwhile. A media player paused that long asks again (with a Range) when it
# plays on.
STALLED_RESPONSE_SECONDS = 60.0

logger = logging.getLogger("onair.serve")  # also when run as __main__

ActionLogger = Callable[[str, str, dict[str, Any]], None]


_access = logging.getLogger("onair.access")
_WEBSOCKET_ACTIONS = {
    "connecting": "WSCONNECTING",
    "rejected": "WSREJECT",
    "connected": "WSCONNECT",
    "disconnected": "WSDISCONNECT",
}


def access_records(protocol: str, action: str, details: dict[str, Any]) -> None:
    """daphne's access log as log records of ``onair.access`` (``LOG_FORMAT=json``: one
    JSON line per request like every other event, rather than daphne's NCSA lines)."""
    if protocol == "http" and action == "complete":
        request = f"{details['method']} {details['path']}"
        fields = {"status": details["status"], "size": details["size"]}
    elif protocol == "websocket" and action in _WEBSOCKET_ACTIONS:
        request, fields = f"{_WEBSOCKET_ACTIONS[action]} {details['path']}", {}
    else:
        return
    _access.info(request, extra={"client": details.get("client"), **fields})


def redacting(logger: ActionLogger) -> ActionLogger:
    """daphne's action logger, given each path without its secrets."""

    def log(protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        logger(protocol, action, details)

    return log


def too_large_response(limit: int) -> bytes:
    """The whole ``413`` response, in the API's error format."""
    # Imported once Django is set up: daphne imports the application after this module.
    from onair.exception_handler import error_body

    body = json.dumps(
        error_body(
            status_code=413,
            code="too_large",
            message=f"The request body is larger than {limit} bytes.",
        )
    ).encode()
    head = (
        "HTTP/1.1 413 Content Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


# Everything below relies on daphne's and twisted's internals (tests/onair/test_serve.py checks
# each): twisted's HTTPChannel calls gotLength(Content-Length, or None when chunked) once the
# headers are in, handleContentChunk for each piece of the body and requestReceived at its
# end; daphne's Server.run() makes an HTTPFactory, whose protocols build WebRequests, and a
# WebSocketFactory given the server's message sizes, whose protocols' onMessage puts each
# message on the application's asyncio.Queue.


# FFmpeg's WHIP muxer (libavformat/whip.c, FFmpeg 8 and 9) opens its session DELETE as an
# upload and never reads the response's head: it parses the status line as a chunk size
# ("HTTP/1.1 200 OK" reads as 0, the last chunk), then fails on any response with "Failed to
# read response from DELETE … ret=-5"; only a connection closed with no response reads as
# its end. A session DELETE from FFmpeg that succeeded is closed that way, when FFmpeg is the
# server's own client: a reverse proxy (``--proxy-headers``, or a forwarded request) would
# answer FFmpeg the closed connection with its own 502 and log an error with the session URL.
_FFMPEG_AGENT = b"Lavf/"
_SESSION_PATH = re.compile(rb"^/(?:whip|whep)/[-\w]+/[A-Za-z0-9_-]{43}$")


class BoundedRequest(WebRequest):
    """daphne's request, refusing a body over its server's ``max_request_bytes`` (``0``: no
    limit) as it arrives."""

    received = 0
    refused = False
    flow: ResponseFlow | None = None
    unanswered = False  # an FFmpeg session DELETE: closed without its (2xx) response

    def gotLength(self, length: int | None) -> None:
        limit = self.server.max_request_bytes
        if limit and length is not None and length > limit:
            # No "100 Continue" for a body refused before it is sent.
            self.requestHeaders.removeHeader(b"Expect")
            self.refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return  # the rest of what was read with the piece that passed the limit
        self.received += len(data)
        limit = self.server.max_request_bytes
        if limit and self.received > limit:
            self.content.close()
            self.refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.refused:
            super().requestReceived(command, path, version)

    def handle_reply(self, message: dict[str, Any]) -> None:
        """daphne's, with a streamed body's flow control (``ResponseFlow``): registered
        before its first piece is written, unregistered before its last (twisted's
        ``finish`` complains of a producer left registered); and FFmpeg's session DELETE
        answered as it reads it (``_FFMPEG_AGENT``)."""
        if self.finished or self.channel is None:
            return
        if message.get("type") == "http.response.start" and self._ffmpeg_session_end(message):
            self.unanswered = True
            self.setResponseCode(message["status"])  # for the access log
            return
        if self.unanswered:
            if not message.get("more_body", False):
                self.channel.loseConnection()
                self._log_complete(self.code, 0)
            return
        if message.get("type") == "http.response.body":
            streaming = message.get("more_body", False)
            if streaming and self.flow is None:
                self.flow = ResponseFlow()
                self.registerProducer(self.flow, True)
            elif not streaming and self.producer is not None:
                self.unregisterProducer()
        super().handle_reply(message)

    def _ffmpeg_session_end(self, message: dict[str, Any]) -> bool:
        agent = self.getHeader(b"user-agent") or b""
        proxied = bool(self.server.proxy_forwarded_address_header) or self.requestHeaders.hasHeader(
            b"x-forwarded-for"
        )
        return (
            self.method == b"DELETE"
            and agent.startswith(_FFMPEG_AGENT)
            and not proxied
            and 200 <= int(message.get("status", 0)) < 300
            and _SESSION_PATH.match(self.path) is not None
        )

    def _log_complete(self, status: int, size: int) -> None:
        """The access log's line of a response daphne did not write."""
        channel = self.channel
        parsed = self.path is not None  # a refused request was not: its channel has its line
        path: bytes = self.path if parsed else getattr(channel, "_path", b"")
        method: bytes = self.method if parsed else getattr(channel, "_command", b"")
        client = self.getClientAddress()
        self.server.log_action(
            "http",
            "complete",
            {
                "path": path.decode("ascii", "replace"),
                "status": status,
                "method": method.decode("ascii", "replace"),
                "client": f"{getattr(client, 'host', '')}:{getattr(client, 'port', '')}",
                "time_taken": 0.0,
                "size": size,
            },
        )

    async def drained(self) -> None:
        """Returns once the connection can take more of the response (at once, unless
        twisted paused it), or has been dropped for taking nothing for
        ``STALLED_RESPONSE_SECONDS``."""
        if self.flow is None or self.finished or self.channel is None:
            return
        try:
            await asyncio.wait_for(self.flow.writable.wait(), STALLED_RESPONSE_SECONDS)
        except TimeoutError:
            logger.info(
                "response dropped: its client took nothing for %g s", STALLED_RESPONSE_SECONDS
            )
            if self.channel is not None:
                self.channel.transport.abortConnection()

    def refuse(self) -> None:
        """Answer ``413`` and close, as twisted answers a malformed request: the application
        never sees the request, and nothing more is read from the connection."""
        self.refused = True
        response = too_large_response(self.server.max_request_bytes)
        channel = self.channel
        channel.transport.write(response)
        channel.loseConnection()
        self._log_complete(413, len(response))


@implementer(IPushProducer)
class ResponseFlow:
    """One streamed response's flow control. daphne writes each body message to twisted,
    which keeps in memory whatever the client has not taken yet, without limit: a client
    reading a large file slowly (a video player fetching ``bytes=0-``) made the server read
    the whole file into memory ahead of it. Registered as the request's push producer, this
    is paused while the connection's send buffer is full, and the application's next
    ``send`` waits (``OnAirServer.handle_reply``) until it drains."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self) -> None:
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:
        # The connection is going away: nothing to wait for (daphne drops what follows).
        self.writable.set()


class BoundedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BoundedRequest
        return protocol


class BoundedWebSocketProtocol(WebSocketProtocol):
    """daphne's WebSocket, closed with ``4429`` when the messages it has waiting for the
    application pass its server's ``max_websocket_backlog`` bytes (``0``: no limit)."""

    overflowed = False

    def onOpen(self) -> None:
        # The cost of each message put on the application's queue, oldest first, and their sum.
        self.waiting: deque[int] = deque()
        self.waiting_bytes = 0
        super().onOpen()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.overflowed:
            return  # what the client sent after we closed
        limit = self.server.max_websocket_backlog
        if limit:
            # The queue is first in, first out: of the messages put on it, the last qsize()
            # are still waiting (daphne's own connect message can only make the sum high).
            while len(self.waiting) > self.application_queue.qsize():
                self.waiting_bytes -= self.waiting.popleft()
            cost = len(payload) + WEBSOCKET_MESSAGE_OVERHEAD_BYTES
            if self.waiting_bytes + cost > limit:
                self.overflowed = True
                self.sendClose(
                    code=CLOSE_BACKLOG,
                    reason=f"More than {limit} bytes of messages waiting; slow down.",
                )
                logger.warning(
                    "websocket closed: its messages waiting passed %d bytes",
                    limit,
                    extra={"client": self.client_addr},
                )
                return
            self.waiting.append(cost)
            self.waiting_bytes += cost
        super().onMessage(payload, isBinary)


class OnAirServer(Server):
    def __init__(
        self, *args: Any, action_logger: ActionLogger | None = None, **kwargs: Any
    ) -> None:
        if action_logger is not None and django_settings.LOG_FORMAT == "json":
            action_logger = access_records
        super().__init__(
            *args, action_logger=redacting(action_logger) if action_logger else None, **kwargs
        )
        # Django is set up: daphne imports the application before it makes the server.
        settings = onair_settings()
        self.max_request_bytes = settings.max_request_bytes
        self.max_websocket_backlog = settings.max_websocket_backlog
        for size in ("websocket_max_message_size", "websocket_max_frame_size"):
            # daphne's default is 1 MiB, and 0 is no limit.
            given = getattr(self, size) or WEBSOCKET_MAX_MESSAGE_BYTES
            setattr(self, size, min(given, WEBSOCKET_MAX_MESSAGE_BYTES))

    retention: asyncio.Task[None] | None = None  # onair.retention, from start to stop
    webhooks: asyncio.Task[None] | None = None  # webhooks.delivery, from start to stop

    async def handle_reply(self, protocol: Any, message: dict[str, Any]) -> None:
        await super().handle_reply(protocol, message)
        if isinstance(protocol, BoundedRequest):
            await protocol.drained()

    def run(self) -> None:
        self.ports: list[Any] = []
        reactor.callWhenRunning(self.started)
        super().run()

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        super().listen_success(port)

    def started(self) -> None:
        # Imported once Django is set up (daphne imports the application before run()).
        from onair.metrics import loop_lag_watch
        from onair.retention import expire_periodically
        from signaling.lifecycle import embedded_sfu_started
        from webhooks.delivery import deliver_forever

        # the reactor calls this before its loop runs: the watch starts on its first turn
        asyncio.get_event_loop().call_soon(loop_lag_watch)
        task = asyncio.ensure_future(embedded_sfu_started())
        task.add_done_callback(_log_failure)
        self.retention = asyncio.ensure_future(expire_periodically())
        self.retention.add_done_callback(_log_failure)
        self.webhooks = asyncio.ensure_future(deliver_forever())
        self.webhooks.add_done_callback(_log_failure)

    def kill_all_applications(self) -> defer.Deferred[None]:
        """daphne's step before the reactor stops (SIGTERM, SIGINT): ours first."""
        return defer.Deferred.fromFuture(asyncio.ensure_future(self.stop_gracefully()))

    async def stop_gracefully(self) -> None:
        from onair.metrics import loop_lag_unwatch
        from signaling.lifecycle import sfu_stop, sfu_stopping

        deadline = threading.Timer(STOP_DEADLINE_SECONDS, _exit_now)
        deadline.daemon = True
        deadline.start()
        logger.info("stopping")
        for task in (self.retention, self.webhooks):
            if task is not None:
                task.cancel()
        loop_lag_unwatch()
        for port in self.ports:
            port.stopListening()
        await sfu_stopping()
        if self.open_websockets():
            await asyncio.sleep(STATUS_DELIVERY_SECONDS)
        await self.close_websockets(within=SOCKETS_CLOSE_SECONDS)
        await sfu_stop(wait_seconds=ROUTERS_CLOSE_SECONDS)
        await super().kill_all_applications().asFuture(asyncio.get_running_loop())

    def open_websockets(self) -> list[tuple[WebSocketProtocol, dict[str, Any]]]:
        return [
            (protocol, details)
            for protocol, details in list(self.connections.items())
            if isinstance(protocol, WebSocketProtocol) and protocol.state == protocol.STATE_OPEN
        ]

    async def close_websockets(self, *, within: float) -> None:
        """Close every open WebSocket with ``CLOSE_RESTARTING``, and wait up to ``within``
        seconds for their consumers to finish (a watch page's viewer is uncounted then)."""
        finishing = []
        for protocol, details in self.open_websockets():
            protocol.sendClose(code=CLOSE_RESTARTING, reason="The server is restarting; reconnect.")
            instance = details.get("application_instance")
            if instance is not None and not instance.done():
                finishing.append(instance)
        if finishing:
            await asyncio.wait(finishing, timeout=within)

    @property
    def http_factory(self) -> HTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        # run() makes daphne's factory and listens with it at once: ours takes its place.
        self._http_factory = BoundedHTTPFactory(self)

    @property
    def ws_factory(self) -> WebSocketFactory:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: WebSocketFactory) -> None:
        # run() makes daphne's factory, then sets its options (the message sizes above).
        factory.protocol = BoundedWebSocketProtocol
        self._ws_factory = factory


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("server start-up work failed", exc_info=task.exception())


def _exit_now() -> None:
    """The stop deadline passed: exit, whatever still runs (named in the log)."""
    running = sorted(
        thread.name
        for thread in threading.enumerate()
        if thread is not threading.current_thread() and not thread.daemon
    )
    logger.warning(
        "still running %.1f s after the stop signal; exiting now (threads: %s)",
        STOP_DEADLINE_SECONDS,
        ", ".join(running) or "none",
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


class OnAirCommandLine(CommandLineInterface):
    server_class = OnAirServer


if __name__ == "__main__":
    OnAirCommandLine.entrypoint()
