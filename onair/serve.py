"""``python -m onair.serve``: daphne, with a bounded request body and no secret in its log.

daphne (twisted) receives a request's whole body before the ASGI application sees any of it,
spilling it to a temporary file past 100 KB, and Django's handler copies it again: no view
can refuse a body before it is all on the server. This refuses, as the bytes arrive, a body
over ``ONAIR_MAX_REQUEST_BYTES`` with ``413`` and closes the connection.

daphne's access log writes each request's path as received, and a WHIP/WHEP session URL
(``/whip/<slug>/<token>``) is the capability to control that session. This writes the same
log with ``onair.logging.redact`` applied to every path.

Serving anywhere but on loopback, it sets ``DJANGO_DEBUG=0`` unless the environment sets it:
the local settings (``make run``) turn DEBUG on by default, and Django's debug pages show
anyone who can reach the server its settings, tracebacks and URLs.

``make run`` and ``make run-cluster`` serve with it; so should production.
"""

from __future__ import annotations

import json
import os
from argparse import Namespace
from collections.abc import Callable
from typing import Any

from daphne.cli import DEFAULT_HOST, CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server

from onair.conf import onair_settings
from onair.logging import redact
from onair.network import host_is_loopback

ActionLogger = Callable[[str, str, dict[str, Any]], None]


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
# end; daphne's Server.run() makes an HTTPFactory, whose protocols build WebRequests.


class BoundedRequest(WebRequest):
    """daphne's request, refusing a body over its server's ``max_request_bytes`` (``0``: no
    limit) as it arrives."""

    received = 0
    refused = False

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

    def refuse(self) -> None:
        """Answer ``413`` and close, as twisted answers a malformed request: the application
        never sees the request, and nothing more is read from the connection."""
        self.refused = True
        response = too_large_response(self.server.max_request_bytes)
        channel = self.channel
        channel.transport.write(response)
        channel.loseConnection()
        client = self.getClientAddress()
        self.server.log_action(
            "http",
            "complete",
            {
                "path": getattr(channel, "_path", b"").decode("ascii", "replace"),
                "status": 413,
                "method": getattr(channel, "_command", b"").decode("ascii", "replace"),
                "client": f"{getattr(client, 'host', '')}:{getattr(client, 'port', '')}",
                "time_taken": 0.0,
                "size": len(response),
            },
        )


class BoundedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BoundedRequest
        return protocol


class OnAirServer(Server):
    def __init__(
        self, *args: Any, action_logger: ActionLogger | None = None, **kwargs: Any
    ) -> None:
        super().__init__(
            *args, action_logger=redacting(action_logger) if action_logger else None, **kwargs
        )
        # Django is set up: daphne imports the application before it makes the server.
        self.max_request_bytes = onair_settings().max_request_bytes

    @property
    def http_factory(self) -> HTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        # run() makes daphne's factory and listens with it at once: ours takes its place.
        self._http_factory = BoundedHTTPFactory(self)


def binds_loopback_only(args: Namespace) -> bool:
    """Whether daphne, given ``args``, listens on loopback only (a UNIX socket, a file
    descriptor or an endpoint string may be reachable from anywhere)."""
    if args.unix_socket or args.file_descriptor is not None or args.socket_strings:
        return False
    return host_is_loopback(args.host or DEFAULT_HOST)


class OnAirCommandLine(CommandLineInterface):
    server_class = OnAirServer

    def run(self, args: list[str]) -> None:
        # Before daphne imports the application, and with it the settings.
        if not binds_loopback_only(self.parser.parse_args(args)):
            os.environ.setdefault("DJANGO_DEBUG", "0")
        super().run(args)


if __name__ == "__main__":
    OnAirCommandLine.entrypoint()
