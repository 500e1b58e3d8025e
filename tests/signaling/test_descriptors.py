"""File descriptors run out after the caps, never before (issue #17, found from outside).

daphne runs in a subprocess whose ``RLIMIT_NOFILE`` is 512, with the default caps. From many
source addresses, each under the per-address cap: watch pages that ask to watch and never
answer, then WebSockets that say nothing, until the server refuses them (``server_full``,
close 4503); then WHEP sessions until ``503 server_full``. A real viewer still gets its
``201`` and its frames, no request is answered 500, and the server logs no ERROR (it used to:
``[Errno 24] Too many open files``, ``unable to open database file``).
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onair.environment import app_environment
from signaling.session_limits import fds_per_session
from testpeers import TestPublisher, TestViewer
from tests.daphne import daphne_process, manage
from tests.signaling.flood import Server, close_sockets, new_stream, publish, watch_socket
from tests.signaling.http_clients import SDP, silent_offer

NOFILE = 512
WATCHERS = 40  # watch pages holding an unanswered offer: under the default process cap
PER_ADDRESS = 10  # each source address stays well under the per-address cap
VIEWER, BROADCASTER = "127.0.0.2", "127.0.0.3"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = app_environment(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        ONAIR_CONNECT_TIMEOUT_SECONDS="300",  # the flood stays for the whole test
        # the caps and descriptors, not the join queue (tests/signaling/test_admission.py):
        # each join that never connects would hold its place in the queue for seconds
        ONAIR_JOIN_CONCURRENCY="0",
    )
    manage(env, "migrate", "--noinput", "-v0")
    with daphne_process(env, tmp_path / "daphne.log", preexec_fn=_low_nofile) as daphne:
        yield Server(daphne.port, daphne.env, daphne.log_path, daphne.process)


async def test_descriptors_outlast_the_caps(server: Server) -> None:
    slug, key = new_stream(server.env)
    publisher = TestPublisher(fps=15)
    viewer = TestViewer()
    held: list[dict[str, Any]] = []
    try:
        await publish(server, publisher, slug=slug, key=key, source=BROADCASTER)
        await asyncio.sleep(1)
        baseline = server.open_fds()

        # Watch pages holding the server's offer: each costs what the caps count for it.
        for first in range(0, WATCHERS, PER_ADDRESS):
            held += await asyncio.gather(
                *(
                    watch_socket(server, slug, f"127.0.1.{first // PER_ADDRESS + 1}", watch=True)
                    for _ in range(PER_ADDRESS)
                )
            )
        assert all("offer" in s["types"] for s in held), [s["errors"] for s in held]
        per_watcher = (server.open_fds() - baseline) / WATCHERS
        assert per_watcher <= fds_per_session() + 0.5, per_watcher

        # Silent WebSockets from many addresses until the process refuses them.
        refused: list[dict[str, Any]] = []
        for address in range(1, 60):
            batch = await asyncio.gather(
                *(
                    watch_socket(server, slug, f"127.0.2.{address}", watch=False)
                    for _ in range(PER_ADDRESS)
                ),
                return_exceptions=True,
            )
            for seen in batch:
                assert isinstance(seen, dict), (seen, server.log()[-3000:])
                (held if "welcome" in seen["types"] else refused).append(seen)
            if refused:
                break
        assert refused, f"{len(held)} WebSockets open, {server.open_fds()} descriptors"
        for seen in refused:
            assert seen["errors"] == ["server_full"], seen
            assert seen["close"] == 4503, seen

        # A real viewer still joins and is served.
        joined = await asyncio.to_thread(
            server.request,
            "POST",
            f"/whep/{slug}",
            source=VIEWER,
            body=await viewer.create_offer(),
            headers={"Content-Type": SDP},
        )
        assert joined.status == 201, (joined, server.log()[-3000:])
        await viewer.accept_answer(joined.body)
        assert await viewer.wait_for_frames(video=5, within=30)

        # WHEP sessions from many addresses until the process cap: a 503, never a 500.
        statuses: list[int] = []
        for address in range(1, 60):
            replies = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        server.request,
                        "POST",
                        f"/whep/{slug}",
                        source=f"127.0.3.{address}",
                        body=silent_offer(),
                        headers={"Content-Type": SDP},
                    )
                    for _ in range(PER_ADDRESS)
                )
            )
            for reply in replies:
                statuses.append(reply.status)
                assert reply.status in (201, 503), (reply, server.log()[-3000:])
                if reply.status == 503:
                    assert json.loads(reply.body)["error"]["code"] == "server_full", reply
            if 503 in statuses:
                break
        assert 503 in statuses
        health = await asyncio.to_thread(server.request, "GET", "/healthz", source=VIEWER)
        assert health.status == 200, health
        print(
            f"\nRLIMIT_NOFILE {NOFILE}: {per_watcher:.1f} descriptors per watch page; "
            f"{len(held)} WebSockets open, {statuses.count(201)} WHEP sessions more; "
            f"daphne fds {baseline} -> {server.open_fds()}"
        )
        log = server.log()
        assert "ERROR" not in log, log[-5000:]
        assert "Too many open files" not in log, log[-5000:]
    finally:
        await close_sockets(held)
        await viewer.close()
        await publisher.close()
