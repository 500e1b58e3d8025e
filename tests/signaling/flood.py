"""A daphne server driven from chosen local addresses, for the flood tests: HTTP requests
and watch WebSockets from a given source address, a new stream with its key."""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import dataclass
from typing import Any

import websockets

from testpeers import TestPublisher
from tests.daphne import DaphneProcess, manage
from tests.signaling.http_clients import SDP

COUNTER = "127.0.0.2"  # where the public viewer count is read from


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


class Server(DaphneProcess):
    def request(
        self,
        method: str,
        path: str,
        *,
        source: str,
        body: str = "",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One HTTP request from the local address ``source``."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=60, source_address=(source, 0)
        )
        try:
            connection.request(method, path, body=body.encode() or None, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read().decode())
        finally:
            connection.close()

    def public_viewers(self, slug: str) -> int:
        reply = self.request("GET", "/api/v1/live/", source=COUNTER)
        assert reply.status == 200, reply
        live = {s["slug"]: s for s in json.loads(reply.body)["results"]}
        return int(live[slug]["viewers"])


async def publish(
    server: Server, publisher: TestPublisher, *, slug: str, key: str, source: str
) -> None:
    """Put ``publisher`` on air on ``slug`` over WHIP from ``source``, as a broadcaster's
    encoder does."""
    published = await asyncio.to_thread(
        server.request,
        "POST",
        f"/whip/{slug}",
        source=source,
        body=await publisher.create_offer(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": SDP},
    )
    assert published.status == 201, (published, server.log())
    await publisher.accept_answer(published.body)


def new_stream(env: dict[str, str]) -> tuple[str, str]:
    out = manage(
        env,
        "shell",
        "-c",
        "import json\n"
        "from django.contrib.auth.models import User\n"
        "from broadcast.services import stream_create\n"
        "stream, key = stream_create(owner=User.objects.create_user('owner'), title='Flooded')\n"
        "print(json.dumps([stream.slug, key.secret]))",
    )
    slug, key = json.loads(out.splitlines()[-1])
    return str(slug), str(key)


async def watch_socket(server: Server, slug: str, source: str, *, watch: bool) -> dict[str, Any]:
    """A watch WebSocket from ``source``: the message types it was told, its error codes and
    how it was closed (if it was). With ``watch`` it asks to watch and stops at the server's
    offer, never answering it (it holds a peer connection); without, at ``welcome``."""
    seen: dict[str, Any] = {"ws": None, "types": [], "errors": [], "close": None}
    try:
        ws = await asyncio.wait_for(
            websockets.connect(
                f"ws://127.0.0.1:{server.port}/ws/watch/{slug}/",
                origin=f"http://127.0.0.1:{server.port}",  # type: ignore[arg-type]
                local_addr=(source, 0),
            ),
            30,
        )
        seen["ws"] = ws
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            seen["types"].append(message["type"])
            if message["type"] == "error":
                seen["errors"].append(message["code"])
            elif message["type"] == "welcome" and watch:
                await ws.send(json.dumps({"type": "watch"}))
            elif message["type"] == ("offer" if watch else "welcome"):
                return seen
    except websockets.ConnectionClosed as closed:
        seen["close"] = closed.rcvd.code if closed.rcvd is not None else None
    return seen


async def close_sockets(held: list[dict[str, Any]]) -> None:
    for seen in held:
        if seen["ws"] is not None:
            await seen["ws"].close()
