"""A publisher that drops and comes back: viewers stay attached and continue."""

import asyncio
import itertools
from collections.abc import Callable

from sfu import (
    DownTrackClosed,
    PublisherClosed,
    PublisherDisconnected,
    Router,
)
from testpeers import TestClients, TestViewer, wait_until
from tests.sfu.router_events import publishers_closed, recorded


def _forward_steps(values: list[int], modulus: int) -> list[int]:
    return [(b - a) % modulus for a, b in itertools.pairwise(values)]


def _assert_monotonic(viewer: TestViewer) -> None:
    sequence_steps = _forward_steps(viewer.video.sequence_numbers, 1 << 16)
    timestamp_steps = _forward_steps(viewer.video.timestamps, 1 << 32)
    assert all(0 < step < 1 << 15 for step in sequence_steps)
    assert all(step < 1 << 31 for step in timestamp_steps)


async def test_viewers_resume_after_the_publisher_reconnects_within_the_grace_period(
    router: Router, clients: TestClients
) -> None:
    events = recorded(router)
    first, first_session = await clients.publish(router)
    viewers = [
        (await clients.subscribe(router, server_offer=offer, record_rtp=True))[0]
        for offer in (False, True)
    ]
    assert all(await asyncio.gather(*(v.wait_for_frames(video=30) for v in viewers)))
    remote_descriptions = [v.pc.remoteDescription.sdp for v in viewers]
    down_tracks = {c.id for v in router.viewers for c in v.down_tracks}

    await first.close()  # the broadcaster's network drops
    assert await wait_until(lambda: any(isinstance(e, PublisherDisconnected) for e in events))
    frames_at_drop = [v.video.frames for v in viewers]
    await asyncio.sleep(1.0)

    second, second_session = await clients.publish(router)
    assert all(
        await asyncio.gather(
            *(v.wait_for_frames(video=n + 45) for v, n in zip(viewers, frames_at_drop, strict=True))
        )
    )

    for viewer, remote in zip(viewers, remote_descriptions, strict=True):
        assert viewer.pc.connectionState == "connected"
        assert viewer.pc.signalingState == "stable"
        assert viewer.pc.remoteDescription.sdp == remote  # no renegotiation
        video_receiver = next(r for r in viewer.pc.getReceivers() if r.track.kind == "video")
        assert len({s.source for s in video_receiver.getSynchronizationSources()}) == 1
        _assert_monotonic(viewer)
    assert {c.id for v in router.viewers for c in v.down_tracks} == down_tracks
    assert all(
        c.producer in second_session.producers for v in router.viewers for c in v.down_tracks
    )
    assert not [e for e in events if isinstance(e, DownTrackClosed)]
    assert publishers_closed(events) == [(first_session.id, "replaced")]
    assert router.publisher is second_session
    assert second.pc.connectionState == "connected"


async def test_after_the_grace_period_down_tracks_close_and_a_new_publisher_reattaches(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    router = new_router(publisher_grace_seconds=0.3)
    events = recorded(router)
    first, _ = await clients.publish(router)
    viewer, session = await clients.subscribe(router, record_rtp=True)
    assert await viewer.wait_for_frames(video=15)

    await first.close()
    assert await wait_until(lambda: any(isinstance(e, PublisherClosed) for e in events))
    assert await wait_until(lambda: not session.down_tracks)
    assert [e.reason for e in events if isinstance(e, PublisherClosed)] == ["timeout"]
    assert {e.reason for e in events if isinstance(e, DownTrackClosed)} == {"producer_closed"}
    assert router.publisher is None

    frames = viewer.video.frames
    await clients.publish(router)
    assert await viewer.wait_for_frames(video=frames + 15)
    assert len(session.down_tracks) == 2
    _assert_monotonic(viewer)
