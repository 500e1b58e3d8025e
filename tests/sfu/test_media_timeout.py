"""A publisher whose media stops is "reconnecting" for its viewers within
``publisher_media_timeout_seconds``, long before ICE consent (≈ 30 s) would say so; one
whose media comes back within the grace period carries on."""

from collections.abc import Callable

import pytest

from sfu import (
    DownTrackClosed,
    PublisherClosed,
    PublisherConnected,
    PublisherDisconnected,
    Router,
    RouterOptions,
)
from testpeers import TestClients, wait_until
from tests.sfu.forwarding_loop import options
from tests.sfu.router_events import live_and_watched, of_kind, publishers_closed, recorded

MEDIA_TIMEOUT = 0.5


@pytest.fixture
def router_options() -> RouterOptions:
    return options(
        stats_interval_seconds=0,
        publisher_grace_seconds=5.0,
        publisher_media_timeout_seconds=MEDIA_TIMEOUT,
    )


async def test_a_publisher_that_stops_sending_is_disconnected_and_connected_when_it_resumes(
    router: Router, clients: TestClients
) -> None:
    events = recorded(router)
    publisher, session, viewer = await live_and_watched(router, clients)
    assert len(of_kind(events, PublisherConnected)) == 1
    assert not of_kind(events, PublisherDisconnected)  # sending: never taken for a stall

    publisher.hold_media(True)
    assert await wait_until(lambda: bool(of_kind(events, PublisherDisconnected)), within=3.0)
    [lost] = of_kind(events, PublisherDisconnected)
    assert isinstance(lost, PublisherDisconnected)
    assert (lost.publisher_id, lost.reason) == (session.id, "media_timeout")
    assert session.peer_connection.connectionState == "connected"  # ICE has not noticed

    frames = viewer.video.frames
    publisher.hold_media(False)
    assert await wait_until(lambda: len(of_kind(events, PublisherConnected)) == 2, within=3.0)
    assert await viewer.wait_for_frames(video=frames + 30)
    assert router.publisher is session
    assert not of_kind(events, PublisherClosed)
    assert not of_kind(events, DownTrackClosed)
    assert len(of_kind(events, PublisherDisconnected)) == 1


async def test_a_stalled_publisher_is_closed_a_grace_period_after_its_media_stopped(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    router = new_router(publisher_grace_seconds=0.5, publisher_media_timeout_seconds=MEDIA_TIMEOUT)
    events = recorded(router)
    publisher, session = await clients.publish(router)
    viewer, _ = await clients.subscribe(router)
    assert await viewer.wait_for_frames(video=15)
    publisher.hold_media(True)
    assert await wait_until(lambda: bool(of_kind(events, PublisherClosed)), within=4.0)
    assert publishers_closed(events) == [(session.id, "timeout")]
    assert router.publisher is None
    publisher.hold_media(False)  # too late: nothing comes back
    assert len(of_kind(events, PublisherConnected)) == 1


async def test_a_publisher_whose_signaling_is_gone_is_lost_at_once(
    router: Router, clients: TestClients
) -> None:
    events = recorded(router)
    _, session = await clients.publish(router)
    assert await wait_until(lambda: bool(of_kind(events, PublisherConnected)))

    assert not router.publisher_gone("someone-else")
    assert router.publisher_gone(session.id)
    assert not router.publisher_gone(session.id)  # lost already
    [lost] = of_kind(events, PublisherDisconnected)
    assert isinstance(lost, PublisherDisconnected)
    assert (lost.publisher_id, lost.reason) == (session.id, "signaling_closed")
    assert await wait_until(lambda: session.connection_state == "closed")
    assert router.publisher is session  # in its grace period: a new publish takes over
