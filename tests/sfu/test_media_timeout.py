"""A publisher whose media stops is "reconnecting" for its viewers within
``publisher_media_timeout_seconds``, long before ICE consent (≈ 30 s) would say so; one
whose media comes back within the grace period carries on."""

from collections.abc import AsyncIterator

import pytest

from sfu import (
    ConsumerClosed,
    PublisherClosed,
    PublisherConnected,
    PublisherDisconnected,
    Router,
    RouterOptions,
    SfuEvent,
)
from testpeers import TestClients, wait_until

MEDIA_TIMEOUT = 0.5


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    router = Router(
        RouterOptions(
            stats_interval_seconds=0,
            publisher_grace_seconds=5.0,
            publisher_media_timeout_seconds=MEDIA_TIMEOUT,
        )
    )
    yield router
    await router.close()


def _of(events: list[SfuEvent], kind: type[SfuEvent]) -> list[SfuEvent]:
    return [e for e in events if isinstance(e, kind)]


async def test_a_publisher_that_stops_sending_is_disconnected_and_connected_when_it_resumes(
    router: Router, clients: TestClients
) -> None:
    events: list[SfuEvent] = []
    router.events.on_any(events.append)
    publisher, session = await clients.publish(router)
    viewer, _ = await clients.subscribe(router)
    assert await viewer.wait_for_frames(video=30)
    assert len(_of(events, PublisherConnected)) == 1
    assert not _of(events, PublisherDisconnected)  # sending: never taken for a stall

    publisher.hold_media(True)
    assert await wait_until(lambda: bool(_of(events, PublisherDisconnected)), within=3.0)
    [lost] = _of(events, PublisherDisconnected)
    assert isinstance(lost, PublisherDisconnected)
    assert (lost.publisher_id, lost.reason) == (session.id, "media_timeout")
    assert session.peer_connection.connectionState == "connected"  # ICE has not noticed

    frames = viewer.video.frames
    publisher.hold_media(False)
    assert await wait_until(lambda: len(_of(events, PublisherConnected)) == 2, within=3.0)
    assert await viewer.wait_for_frames(video=frames + 30)
    assert router.publisher is session
    assert not _of(events, PublisherClosed)
    assert not _of(events, ConsumerClosed)
    assert len(_of(events, PublisherDisconnected)) == 1


async def test_a_stalled_publisher_is_closed_a_grace_period_after_its_media_stopped(
    clients: TestClients,
) -> None:
    router = Router(
        RouterOptions(
            stats_interval_seconds=0,
            publisher_grace_seconds=0.5,
            publisher_media_timeout_seconds=MEDIA_TIMEOUT,
        )
    )
    events: list[SfuEvent] = []
    router.events.on_any(events.append)
    try:
        publisher, session = await clients.publish(router)
        viewer, _ = await clients.subscribe(router)
        assert await viewer.wait_for_frames(video=15)
        publisher.hold_media(True)
        assert await wait_until(lambda: bool(_of(events, PublisherClosed)), within=4.0)
        assert [(e.publisher_id, e.reason) for e in _of(events, PublisherClosed)] == [  # type: ignore[attr-defined]
            (session.id, "timeout")
        ]
        assert router.publisher is None
        publisher.hold_media(False)  # too late: nothing comes back
        assert len(_of(events, PublisherConnected)) == 1
    finally:
        await router.close()


async def test_a_publisher_whose_signaling_is_gone_is_lost_at_once(
    router: Router, clients: TestClients
) -> None:
    events: list[SfuEvent] = []
    router.events.on_any(events.append)
    _, session = await clients.publish(router)
    assert await wait_until(lambda: bool(_of(events, PublisherConnected)))

    assert not router.publisher_gone("someone-else")
    assert router.publisher_gone(session.id)
    assert not router.publisher_gone(session.id)  # lost already
    [lost] = _of(events, PublisherDisconnected)
    assert isinstance(lost, PublisherDisconnected)
    assert (lost.publisher_id, lost.reason) == (session.id, "signaling_closed")
    assert await wait_until(lambda: session.connection_state == "closed")
    assert router.publisher is session  # in its grace period: a new publish takes over
