"""What a router tells: its events recorded, and picked out by kind."""

from sfu import PublisherClosed, PublisherPeer, Router, SfuEvent
from testpeers import TestClients, TestPublisher, TestViewer


def recorded(router: Router) -> list[SfuEvent]:
    """Every event ``router`` emits from now on, in order."""
    events: list[SfuEvent] = []
    router.events.on_any(events.append)
    return events


def of_kind(events: list[SfuEvent], kind: type[SfuEvent]) -> list[SfuEvent]:
    return [e for e in events if isinstance(e, kind)]


def publishers_closed(events: list[SfuEvent]) -> list[tuple[str, str]]:
    """(publisher id, reason) of every ``PublisherClosed`` so far."""
    return [(e.publisher_id, e.reason) for e in events if isinstance(e, PublisherClosed)]


async def live_and_watched(
    router: Router, clients: TestClients
) -> tuple[TestPublisher, PublisherPeer, TestViewer]:
    """A publisher on ``router`` and a viewer that has decoded 30 of its frames."""
    publisher, session = await clients.publish(router)
    viewer, _ = await clients.subscribe(router)
    assert await viewer.wait_for_frames(video=30)
    return publisher, session, viewer
