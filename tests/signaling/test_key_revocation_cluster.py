"""Key revocation in cluster mode, with real processes (``tests.cluster``): the owner rotates
the key through one daphne process; the WHIP broadcast it let in (its peer on a runsfu
worker) ends, its session is refused through either daphne, and a studio WebSocket the key
let in on the other daphne is closed at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
import websockets

from signaling.consumers import CLOSE_KEY_REVOKED
from testpeers import TestPublisher, wait_until
from tests.cluster import (
    CLUSTER_SKIP,
    Cluster,
    cluster_fixture,  # noqa: F401 (provides the "cluster" fixture)
    http,
)
from tests.signaling.http_clients import SDP, SDPFRAG
from tests.signaling.test_whip_cluster import _owner_token

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, CLUSTER_SKIP]


async def studio_with_key(base_url: str, slug: str, key: str) -> Any:
    socket = await websockets.connect(
        base_url.replace("http://", "ws://") + f"/ws/studio/{slug}/",
        origin=base_url,  # type: ignore[arg-type]
    )
    assert json.loads(await socket.recv())["authorized"] is False
    await socket.send(json.dumps({"type": "auth", "key": key}))
    assert json.loads(await socket.recv())["type"] == "state"
    return socket


async def said_until_closed(socket: Any, within: float = 15) -> list[dict[str, Any]]:
    said: list[dict[str, Any]] = []

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):  # a close code of 4001
            async for raw in socket:
                said.append(json.loads(raw))

    await asyncio.wait_for(read(), within)
    return said


async def test_rotating_a_key_ends_its_sessions_on_every_process(cluster: Cluster) -> None:
    daphne_a, daphne_b = cluster.daphne
    slug, _, key = cluster.new_stream("Revoked in a cluster")
    owner = {"Authorization": f"Token {_owner_token(cluster, slug)}"}
    publisher = TestPublisher()
    studio = await studio_with_key(daphne_b, slug, key)
    try:
        published = await http(
            "POST",
            f"{daphne_a}/whip/{slug}",
            await publisher.create_offer(),
            {"Authorization": f"Bearer {key}", "Content-Type": SDP},
        )
        assert published.status == 201, (published, cluster.logs())
        await publisher.accept_answer(published.body)
        session = published.headers["Location"]
        assert await wait_until(lambda: publisher.pc.connectionState == "connected", 20)

        rotated = await http("POST", f"{daphne_a}/api/v1/streams/{slug}/key/rotate/", "", owner)
        assert rotated.status == 201, rotated

        # The studio on the other process hears it and is closed.
        said = await said_until_closed(studio)
        assert {"type": "error", "code": "key_revoked"}.items() <= said[-1].items(), said
        assert studio.close_code == CLOSE_KEY_REVOKED
        # The broadcast ended; its publisher's peer on the worker is closed.
        stream = json.loads(
            (await http("GET", f"{daphne_b}/api/v1/streams/{slug}/", "", owner)).body
        )
        assert stream["state"] == "ended"
        assert await wait_until(lambda: publisher.pc.connectionState in ("failed", "closed"), 40), (
            publisher.pc.connectionState
        )
        # The WHIP client's next request is refused through either process.
        for base in (daphne_a, daphne_b):
            trickle = await http(
                "PATCH",
                base + session,
                "a=end-of-candidates\r\n",
                {"Content-Type": SDPFRAG, "Authorization": f"Bearer {key}"},
            )
            assert trickle.status in (401, 404), trickle
    finally:
        await studio.close()
        await publisher.close()
