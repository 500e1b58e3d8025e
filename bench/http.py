"""Just enough HTTP/1.1 for the bench's signaling, on asyncio streams (no extra dependency).

One request per connection (``Connection: close``); bodies by ``Content-Length``.
``post_json_blocking`` is the client the orchestrating processes use.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def post_json_blocking(url: str, payload: dict[str, Any] | None = None) -> Any:
    """POST ``payload`` as JSON and return the decoded answer (blocking)."""
    request = urllib.request.Request(url, data=json.dumps(payload or {}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    first, *lines = head.rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    return b"".join(chunks)


async def request(
    method: str,
    url: str,
    body: bytes = b"",
    content_type: str = "application/json",
    deadline: float = 70.0,
    headers: dict[str, str] | None = None,
    source: str | None = None,
) -> Response:
    """One request; ``source``: the local address to send it from (a client of its own)."""
    parts = urlsplit(url)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")

    async def exchange() -> Response:
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        try:
            writer.write(
                (
                    f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
                ).encode()
                + body
            )
            await writer.drain()
            status_line, answered = await _read_head(reader)
            if "content-length" in answered:
                payload = await reader.readexactly(int(answered["content-length"]))
            elif answered.get("transfer-encoding") == "chunked":
                payload = await _read_chunked(reader)
            else:
                payload = await reader.read()
            return Response(int(status_line.split()[1]), payload, answered)
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), deadline)


async def post_json(url: str, message: dict[str, Any]) -> Any:
    response = await request("POST", url, json.dumps(message).encode())
    return response.json()


Handler = Callable[[str, bytes], Awaitable[Response]]


async def serve(host: str, port: int, handler: Handler) -> asyncio.Server:
    """Serve ``handler(path, body)`` for POST requests."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line, headers = await _read_head(reader)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            method, path, _ = request_line.split(" ", 2)
            if method == "POST":
                response = await handler(path, body)
            else:
                response = Response(405, b"")
        except Exception as exc:
            response = Response(500, repr(exc).encode())
        extra = "".join(f"{name}: {value}\r\n" for name, value in response.headers.items())
        writer.write(
            f"HTTP/1.1 {response.status} X\r\nConnection: close\r\n{extra}"
            f"Content-Length: {len(response.body)}\r\n\r\n".encode()
            + response.body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(on_connection, host, port)
