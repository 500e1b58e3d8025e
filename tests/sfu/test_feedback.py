"""Viewers' RTCP feedback: NACKs answered from the cache, PLI storms throttled."""

import asyncio
import itertools
import time

from sfu import Router
from sfu.testing import DecodeErrorCounter, TestClients, TestViewer


async def test_nacks_on_a_lossy_downlink_are_answered_from_the_cache(
    router: Router, clients: TestClients
) -> None:
    with DecodeErrorCounter().installed() as decode_errors:
        await clients.publish(router)
        lossy, session = await clients.subscribe(router)
        lossy.drop_incoming(0.05)
        assert await lossy.wait_for_frames(video=5)
        frames_before = lossy.video.frames
        await asyncio.sleep(4.0)

    video = next(c for c in session.consumers if c.kind == "video").stats()
    frames = lossy.video.frames - frames_before
    print(
        f"5% loss for 4 s: {frames} frames decoded, {video.nacks_received} NACKed, "
        f"{video.retransmitted_packets} retransmitted, {video.nack_misses} misses, "
        f"{video.packets_sent} sent, {decode_errors.errors} decode errors"
    )
    assert video.retransmitted_packets > 0
    assert video.retransmitted_packets >= video.nacks_received * 0.8
    assert frames >= 100  # of 120 sent: repaired frames decode
    assert decode_errors.errors <= 2


async def _storm(viewer: TestViewer, per_second: float, until: float) -> int:
    sent = 0
    while time.monotonic() < until:
        sent += await viewer.send_pli()
        await asyncio.sleep(1 / per_second)
    return sent


async def test_a_pli_storm_reaches_the_publisher_at_most_once_per_second(
    router: Router, clients: TestClients
) -> None:
    publisher, _ = await clients.publish(router, fps=15)
    viewers = [(await clients.subscribe(router, decode=False))[0] for _ in range(20)]
    assert all(await asyncio.gather(*(v.wait_for_frames(video=5) for v in viewers)))
    await asyncio.sleep(1.0)  # let the joins' own keyframe requests drain

    video = next(p for p in router.producers if p.kind == "video")
    requests_before = video.stats().keyframe_requests
    seconds = 5.0
    started = time.monotonic()
    sent = sum(await asyncio.gather(*(_storm(v, 10, started + seconds) for v in viewers)))
    await asyncio.sleep(0.2)  # the last deferred request
    elapsed = time.monotonic() - started

    upstream = [t for t in publisher.keyframe_requests if t >= started]
    spacing = [b - a for a, b in itertools.pairwise(upstream)]
    received = video.stats().keyframe_requests - requests_before
    print(
        f"PLI storm: {sent} PLIs sent by 20 viewers in {elapsed:.1f} s, {received} reached "
        f"the producer, {len(upstream)} keyframe requests reached the publisher, "
        f"spaced {min(spacing):.2f}-{max(spacing):.2f} s"
    )
    assert sent >= 20 * 10 * seconds * 0.8
    assert received >= sent * 0.9
    assert len(upstream) <= elapsed + 1
    assert len(upstream) >= seconds - 1
    assert min(spacing) > 0.9
