"""Takeover from a healthy publisher is make-before-break: the newcomer is pending until its
connection is up, and one that never connects leaves the broadcast alone."""

from collections.abc import Callable

import pytest

from sfu import (
    DownTrackClosed,
    PublisherConnected,
    PublisherDisconnected,
    PublisherPeer,
    Router,
    RouterOptions,
)
from testpeers import TestClients, TestPublisher, wait_until
from tests.sfu.forwarding_loop import options
from tests.sfu.router_events import live_and_watched, publishers_closed, recorded

CONNECT_TIMEOUT = 1.5


@pytest.fixture
def router_options() -> RouterOptions:
    return options(
        stats_interval_seconds=0,
        publisher_grace_seconds=5.0,
        connect_timeout_seconds=CONNECT_TIMEOUT,
    )


async def _offering(router: Router, clients: TestClients) -> tuple[TestPublisher, PublisherPeer]:
    """A newcomer that has sent its offer and not yet applied the answer."""
    newcomer = TestPublisher()
    clients.publishers.append(newcomer)
    return newcomer, await router.publish(await newcomer.create_offer())


async def _never_connecting(router: Router, clients: TestClients) -> str:
    """A publish whose client never does ICE (it never applies the answer): an encoder
    behind a network that blocks UDP. Returns its session id."""
    _, session = await _offering(router, clients)
    return session.id


async def test_a_newcomer_that_never_connects_leaves_a_live_publisher_alone(
    router: Router, clients: TestClients
) -> None:
    events = recorded(router)
    _, live, viewer = await live_and_watched(router, clients)
    down_tracks = {c.id for v in router.viewers for c in v.down_tracks}

    pending_id = await _never_connecting(router, clients)

    # the viewer keeps receiving the live publisher's frames while the newcomer tries
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 20, within=CONNECT_TIMEOUT)
    assert router.publisher is live
    pending = router.pending_publisher
    assert pending is not None
    assert pending.id == pending_id
    assert router.publisher_session(pending_id) is pending

    assert await wait_until(lambda: router.pending_publisher is None, within=CONNECT_TIMEOUT + 3)
    assert publishers_closed(events) == [(pending_id, "connect_timeout")]
    assert not [e for e in events if isinstance(e, PublisherDisconnected | DownTrackClosed)]
    assert router.publisher is live
    assert not live.lost
    assert {c.id for v in router.viewers for c in v.down_tracks} == down_tracks
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 20)


async def test_a_takeover_swaps_once_the_newcomer_is_connected(
    router: Router, clients: TestClients
) -> None:
    events = recorded(router)
    _, first, viewer = await live_and_watched(router, clients)
    down_tracks = {c.id for v in router.viewers for c in v.down_tracks}

    newcomer, second = await _offering(router, clients)
    assert router.publisher is first
    assert router.pending_publisher is second
    assert not publishers_closed(events)
    await newcomer.accept_answer(second.answer_sdp)

    assert await wait_until(lambda: router.publisher is second)
    assert router.pending_publisher is None
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 30)
    assert all(c.producer in second.producers for v in router.viewers for c in v.down_tracks)
    assert {c.id for v in router.viewers for c in v.down_tracks} == down_tracks
    assert publishers_closed(events) == [(first.id, "replaced")]
    connected = [e.publisher_id for e in events if isinstance(e, PublisherConnected)]
    assert connected == [first.id, second.id]
    assert not [e for e in events if isinstance(e, PublisherDisconnected | DownTrackClosed)]


async def test_a_newer_publish_replaces_the_pending_one(
    router: Router, clients: TestClients
) -> None:
    events = recorded(router)
    _, first, viewer = await live_and_watched(router, clients)
    stuck_id = await _never_connecting(router, clients)

    _, third = await clients.publish(router)

    assert await wait_until(lambda: len(publishers_closed(events)) == 2)
    assert publishers_closed(events) == [(stuck_id, "replaced"), (first.id, "replaced")]
    assert router.publisher is third
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 30)


async def test_a_pending_publisher_whose_client_is_gone_is_dropped(
    router: Router, clients: TestClients
) -> None:
    events = recorded(router)
    _, live = await clients.publish(router)
    assert await wait_until(lambda: live.connected.is_set())
    gone_id = await _never_connecting(router, clients)
    withdrawn_id = await _never_connecting(router, clients)  # replaces the first

    assert await router.withdraw_pending(withdrawn_id)
    assert not await router.withdraw_pending(live.id)
    assert router.pending_publisher is None
    gone_again = await _never_connecting(router, clients)
    assert router.publisher_gone(gone_again)  # its studio tab closed
    assert router.pending_publisher is None

    assert await wait_until(lambda: len(publishers_closed(events)) == 3)
    assert publishers_closed(events) == [
        (gone_id, "replaced"),
        (withdrawn_id, "closed"),
        (gone_again, "signaling_closed"),
    ]
    assert not [e for e in events if isinstance(e, PublisherDisconnected)]
    assert router.publisher is live
    assert not live.lost


async def test_an_unhealthy_publisher_is_replaced_at_once(
    router: Router, clients: TestClients
) -> None:
    """A publisher whose media stopped (its viewers see it reconnecting) does not wait
    for the newcomer to connect."""
    first_client, first, _ = await live_and_watched(router, clients)
    first_client.hold_media(True)
    assert await wait_until(lambda: first.media_stalled)

    newcomer_id = await _never_connecting(router, clients)

    assert router.pending_publisher is None
    assert router.publisher is not None
    assert router.publisher.id == newcomer_id
    assert first.closed


async def test_a_pending_publisher_takes_over_once_the_current_one_stops(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    """The current publisher's media stops while a newcomer waits: the newcomer need not
    wait for its connection any more (its viewers see "reconnecting" already)."""
    router = new_router(connect_timeout_seconds=10.0, publisher_media_timeout_seconds=0.5)
    events = recorded(router)
    first_client, first, viewer = await live_and_watched(router, clients)
    newcomer, second = await _offering(router, clients)
    assert router.pending_publisher is second

    first_client.hold_media(True)

    assert await wait_until(lambda: len(publishers_closed(events)) == 1)
    assert publishers_closed(events) == [(first.id, "replaced")]
    assert router.publisher is second
    assert router.pending_publisher is None
    await newcomer.accept_answer(second.answer_sdp)
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 30)
    assert [e.publisher_id for e in events if isinstance(e, PublisherConnected)][-1] == second.id
