"""Issue #17, acceptance 4: one address floods a real server with anonymous sessions.

daphne runs in a subprocess (the embedded default, SQLite) with a live broadcast from a real
aiortc WHIP publisher. From 127.0.0.1, a bounded flood of WHEP POSTs whose client never does
ICE and of watch WebSockets that ask to watch and never answer: every attempt past the
per-address cap is refused with 429 / ``too_many_sessions`` and close code 4429, the public
viewer count never counts any of them, and they are all gone after the connect deadline
(their DELETE is 404, the server's descriptors are back to their baseline). Meanwhile a real
aiortc WHEP viewer from 127.0.0.2 joins, decodes, and is the one viewer counted.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets

from onair.environment import app_environment
from sfu.testing import TestPublisher, TestViewer, wait_until
from tests.daphne import DaphneProcess, daphne_process, manage
from tests.signaling.http_clients import SDP, silent_offer

CAP = 6  # ONAIR_MAX_SESSIONS_PER_ADDRESS
DEADLINE = 8  # ONAIR_CONNECT_TIMEOUT_SECONDS: the honest viewer must connect within it
FLOOD_POSTS = 3 * CAP
FLOOD_SOCKETS = 2 * CAP
ATTACKER, VIEWER, BROADCASTER = "127.0.0.1", "127.0.0.2", "127.0.0.3"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


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
        reply = self.request("GET", "/api/v1/live/", source=VIEWER)
        assert reply.status == 200, reply
        live = {s["slug"]: s for s in json.loads(reply.body)["results"]}
        return int(live[slug]["viewers"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = app_environment(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        ONAIR_MAX_SESSIONS_PER_ADDRESS=str(CAP),
        ONAIR_CONNECT_TIMEOUT_SECONDS=str(DEADLINE),
    )
    manage(env, "migrate", "--noinput", "-v0")
    with daphne_process(env, tmp_path / "daphne.log") as daphne:
        yield Server(daphne.port, daphne.env, daphne.log_path, daphne.process)


def _new_stream(env: dict[str, str]) -> tuple[str, str]:
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


async def _flood_socket(server: Server, slug: str) -> dict[str, Any]:
    """A watch WebSocket from the attacker's address that asks to watch and never answers:
    what it was told, and how it was closed (if it was)."""
    url = f"ws://127.0.0.1:{server.port}/ws/watch/{slug}/"
    ws = await websockets.connect(
        url,
        origin=f"http://127.0.0.1:{server.port}",  # type: ignore[arg-type]
        local_addr=(ATTACKER, 0),
    )
    seen: dict[str, Any] = {"ws": ws, "types": [], "errors": [], "close": None}
    try:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            seen["types"].append(message["type"])
            if message["type"] == "welcome":
                await ws.send(json.dumps({"type": "watch"}))
            elif message["type"] == "error":
                seen["errors"].append(message)
            elif message["type"] == "offer":
                return seen  # holds a peer connection it will never complete
    except websockets.ConnectionClosed as closed:
        seen["close"] = closed.rcvd.code if closed.rcvd is not None else None
    return seen


async def test_a_flood_from_one_address_is_capped_uncounted_and_expires(server: Server) -> None:
    slug, key = _new_stream(server.env)
    publisher = TestPublisher(fps=15)
    viewer = TestViewer()
    flood_sockets: list[dict[str, Any]] = []
    try:
        published = await asyncio.to_thread(
            server.request,
            "POST",
            f"/whip/{slug}",
            source=BROADCASTER,
            body=await publisher.create_offer(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": SDP},
        )
        assert published.status == 201, (published, server.log())
        await publisher.accept_answer(published.body)
        await asyncio.sleep(1)
        baseline = server.open_fds()
        assert await asyncio.to_thread(server.public_viewers, slug) == 0

        # The flood: WHEP POSTs and watch WebSockets at once, all from one address.
        posts = [
            asyncio.to_thread(
                server.request,
                "POST",
                f"/whep/{slug}",
                source=ATTACKER,
                body=silent_offer(),
                headers={"Content-Type": SDP},
            )
            for _ in range(FLOOD_POSTS)
        ]
        sockets = [_flood_socket(server, slug) for _ in range(FLOOD_SOCKETS)]
        results = await asyncio.gather(*posts, *sockets)
        replies: list[Reply] = results[:FLOOD_POSTS]
        flood_sockets = results[FLOOD_POSTS:]
        peak_fds = server.open_fds()

        created = [r for r in replies if r.status == 201]
        offered = [s for s in flood_sockets if "offer" in s["types"]]
        refused_posts = [r for r in replies if r.status == 429]
        assert len(created) + len(refused_posts) == FLOOD_POSTS, [r.status for r in replies]
        for reply in refused_posts:
            assert json.loads(reply.body)["error"]["code"] == "too_many_sessions"
            assert int(reply.headers["Retry-After"]) > 0
        for refused in (s for s in flood_sockets if "offer" not in s["types"]):
            assert [e["code"] for e in refused["errors"]] == ["too_many_sessions"], refused
            assert refused["close"] == 4429, refused
        # At most CAP peer sessions from the address, WHEP and WebSocket together.
        assert 0 < len(created) + len(offered) <= CAP, (len(created), len(offered))
        assert await asyncio.to_thread(server.public_viewers, slug) == 0

        # A real viewer from another address joins, decodes, and is the one counted.
        offer = await viewer.create_offer()
        joined = await asyncio.to_thread(
            server.request,
            "POST",
            f"/whep/{slug}",
            source=VIEWER,
            body=offer,
            headers={"Content-Type": SDP},
        )
        assert joined.status == 201, (joined, server.log()[-3000:])
        await viewer.accept_answer(joined.body)
        assert await viewer.wait_for_frames(video=10, within=30)
        assert viewer.video.first_frame_matches_pattern

        async def counted(count: int) -> bool:
            return await asyncio.to_thread(server.public_viewers, slug) == count

        assert await wait_until_async(lambda: counted(1), 15)

        # After the deadline the flood's sessions are gone and were never counted.
        await asyncio.sleep(DEADLINE + 2)
        for reply in created:
            gone = await asyncio.to_thread(
                server.request, "DELETE", reply.headers["Location"], source=ATTACKER
            )
            assert gone.status == 404, gone
        assert await counted(1)
        peak = await asyncio.to_thread(
            server.request, "GET", f"/api/v1/live/?slug={slug}", source=VIEWER
        )
        assert {s["slug"]: s["peak_viewers"] for s in json.loads(peak.body)["results"]}[slug] == 1
        for seen in flood_sockets:
            await seen["ws"].close()
        # The address has its places back.
        again = await asyncio.to_thread(
            server.request,
            "POST",
            f"/whep/{slug}",
            source=ATTACKER,
            body=silent_offer(),
            headers={"Content-Type": SDP},
        )
        assert again.status == 201, again
        gone = await asyncio.to_thread(
            server.request, "DELETE", again.headers["Location"], source=ATTACKER
        )
        assert gone.status == 200
        deleted = await asyncio.to_thread(
            server.request, "DELETE", joined.headers["Location"], source=VIEWER
        )
        assert deleted.status == 200
        assert await wait_until_async(lambda: counted(0), 15)
        assert await wait_until(lambda: server.open_fds() <= baseline, 15), (
            baseline,
            server.open_fds(),
        )
        sessions = len(created) + len(offered)
        print(
            f"\nflood: {len(created)} WHEP + {len(offered)} WebSocket sessions admitted, "
            f"{len(refused_posts)} POSTs and {FLOOD_SOCKETS - len(offered)} sockets refused; "
            f"daphne fds {baseline} -> {peak_fds} -> {server.open_fds()} "
            f"(~{(peak_fds - baseline) / max(sessions, 1):.1f} per admitted session)"
        )
        assert "ERROR" not in server.log(), server.log()[-5000:]
    finally:
        for seen in flood_sockets:
            await seen["ws"].close()
        await viewer.close()
        await publisher.close()


async def wait_until_async(condition: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True
