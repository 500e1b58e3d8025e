"""A peer session that does not connect by its deadline is lost and frees its sockets."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from aioice.ice import get_host_addresses

from sfu import PublisherClosed, PublisherDisconnected, Router, ViewerLeft
from testpeers import TestClients, TestPublisher, TestViewer, wait_until
from tests.sfu.forwarding_loop import options

DEADLINE = 1.0


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    router = Router(
        options(
            stats_interval_seconds=0, publisher_grace_seconds=1.0, connect_timeout_seconds=DEADLINE
        )
    )
    yield router
    await router.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def without_candidates(sdp: str) -> str:
    """An offer as a client that never does ICE sends it: no candidates, no end."""
    lines = [
        line
        for line in sdp.splitlines()
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    ]
    return "\r\n".join(lines) + "\r\n"


async def test_a_viewer_that_never_does_ice_is_closed_and_its_sockets_freed(
    router: Router, clients: TestClients
) -> None:
    await clients.publish(router)
    left: list[ViewerLeft] = []
    router.events.on(ViewerLeft, left.append)
    client = TestViewer(decode=False)
    offer = without_candidates(await client.create_offer())
    baseline = open_fds()

    session = await router.subscribe(offer)
    assert open_fds() > baseline  # its ICE sockets
    assert router.get_viewer(session.id) is session

    assert await wait_until(lambda: bool(left), DEADLINE + 10)
    assert [(e.viewer_id, e.reason) for e in left] == [(session.id, "connect_timeout")]
    assert router.viewers == ()
    assert session.closed
    assert session.connection_state == "closed"
    assert await wait_until(lambda: open_fds() <= baseline, 5)
    await client.close()


async def test_a_server_offer_never_answered_is_closed(
    router: Router, clients: TestClients
) -> None:
    await clients.publish(router)
    left: list[ViewerLeft] = []
    router.events.on(ViewerLeft, left.append)
    session = await router.subscribe()
    assert await wait_until(lambda: bool(left), DEADLINE + 10)
    assert left[0].reason == "connect_timeout"
    assert router.get_viewer(session.id) is None


@pytest.mark.parametrize("server_offer", [False, True])
async def test_an_unanswered_session_holds_one_socket_per_host_address(
    router: Router, clients: TestClients, server_offer: bool
) -> None:
    """What ``signaling.session_limits`` counts per session. The server's own offer (the
    watch page) used to gather one ICE transport per media kind: twice the sockets."""
    await clients.publish(router)
    client = TestViewer(decode=False)
    offer = None if server_offer else without_candidates(await client.create_offer())
    baseline = open_fds()
    session = await router.subscribe(offer)
    held = open_fds() - baseline
    assert held == len(get_host_addresses(use_ipv4=True, use_ipv6=True)), held
    await session.close()
    await client.close()


async def test_connected_sessions_outlive_the_deadline(
    router: Router, clients: TestClients
) -> None:
    await clients.publish(router)
    viewer, session = await clients.subscribe(router, decode=False)
    assert await viewer.wait_for_frames(video=3, within=10)
    await session.connected.wait()
    frames = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > frames + 30, DEADLINE + 10)
    assert router.get_viewer(session.id) is session
    assert router.publisher is not None
    assert not router.publisher.closed


async def test_a_publisher_that_never_connects_is_lost_then_closed(router: Router) -> None:
    lost: list[PublisherDisconnected] = []
    closed: list[PublisherClosed] = []
    router.events.on(PublisherDisconnected, lost.append)
    router.events.on(PublisherClosed, closed.append)
    client = TestPublisher()
    try:
        offer = without_candidates(await client.create_offer())
        baseline = open_fds()
        session = await router.publish(offer)
        assert await wait_until(lambda: bool(lost), DEADLINE + 10)
        assert (lost[0].publisher_id, lost[0].reason) == (session.id, "connect_timeout")
        assert session.connection_state == "closed"  # its sockets go at once
        # then, like any lost publisher, it is given up after the grace period
        assert await wait_until(lambda: bool(closed), 10)
        assert closed[0].reason == "timeout"
        assert router.publisher is None
        assert await wait_until(lambda: open_fds() <= baseline, 5)
    finally:
        await client.close()
