"""Issue #17, acceptance 4: one address floods a real server with anonymous sessions.

daphne runs in a subprocess (the embedded default, SQLite) with a live broadcast from a real
aiortc WHIP publisher. From 127.0.0.1, a bounded flood of WHEP POSTs whose client never does
ICE and of watch WebSockets that ask to watch and never answer: every attempt past the
per-address cap is refused with 429 / ``too_many_sessions`` and close code 4429, the public
viewer count never counts any of them, and they are all gone after the connect deadline
(each one's DELETE answers 200 once, as for any session that ended, then 404; the server's
descriptors are back to their baseline). Meanwhile a real aiortc WHEP viewer from 127.0.0.2
joins, decodes, and is the one viewer counted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onair.environment import app_environment
from testpeers import TestPublisher, TestViewer, wait_until, wait_until_awaited
from tests.daphne import daphne_process, manage
from tests.signaling.flood import Reply, Server, close_sockets, new_stream, publish, watch_socket
from tests.signaling.http_clients import SDP, silent_offer

CAP = 6  # ONAIR_MAX_SESSIONS_PER_ADDRESS
DEADLINE = 8  # ONAIR_CONNECT_TIMEOUT_SECONDS: the honest viewer must connect within it
FLOOD_POSTS = 3 * CAP
FLOOD_SOCKETS = 2 * CAP
ATTACKER, VIEWER, BROADCASTER = "127.0.0.1", "127.0.0.2", "127.0.0.3"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


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


async def test_a_flood_from_one_address_is_capped_uncounted_and_expires(server: Server) -> None:
    slug, key = new_stream(server.env)
    publisher = TestPublisher(fps=15)
    viewer = TestViewer()
    flood_sockets: list[dict[str, Any]] = []
    try:
        await publish(server, publisher, slug=slug, key=key, source=BROADCASTER)
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
        sockets = [watch_socket(server, slug, ATTACKER, watch=True) for _ in range(FLOOD_SOCKETS)]
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
            assert refused["errors"] == ["too_many_sessions"], refused
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

        assert await wait_until_awaited(lambda: counted(1), 15, interval=0.5)

        # After the deadline the flood's sessions are gone and were never counted.
        await asyncio.sleep(DEADLINE + 2)
        for reply in created:
            gone = await asyncio.to_thread(
                server.request, "DELETE", reply.headers["Location"], source=ATTACKER
            )
            assert gone.status == 200, gone
            twice = await asyncio.to_thread(
                server.request, "DELETE", reply.headers["Location"], source=ATTACKER
            )
            assert twice.status == 404, twice
        assert await counted(1)
        peak = await asyncio.to_thread(
            server.request, "GET", f"/api/v1/live/?slug={slug}", source=VIEWER
        )
        assert {s["slug"]: s["peak_viewers"] for s in json.loads(peak.body)["results"]}[slug] == 1
        await close_sockets(flood_sockets)
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
        assert await wait_until_awaited(lambda: counted(0), 15, interval=0.5)
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
        await close_sockets(flood_sockets)
        await viewer.close()
        await publisher.close()
