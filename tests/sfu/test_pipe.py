"""An origin router piped to an edge router over UDP on loopback, in one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sfu import Router
from sfu.pipe import EdgePipe, EdgeRouter, OriginPipe, PipeTrack
from testpeers import DecodeErrorCounter, TestClients, wait_until
from testpeers.simulcast import SMALL_LAYERS, SimulcastPublisher
from tests.sfu.forwarding_loop import options

OPTIONS = options(stats_interval_seconds=0, publisher_grace_seconds=5.0)


class _Pipe:
    def __init__(self, origin: OriginPipe, edge: EdgePipe, router: EdgeRouter) -> None:
        self.origin = origin
        self.edge = edge
        self.router = router
        self.announcements: list[tuple[PipeTrack, ...]] = []


@pytest.fixture
async def piped(router: Router) -> AsyncIterator[_Pipe]:
    edge_pipe = await EdgePipe.open(host="127.0.0.1")
    edge = EdgeRouter(OPTIONS, router_id=router.id, pipe=edge_pipe)
    announced: list[tuple[PipeTrack, ...]] = []
    updates: list[asyncio.Task[None]] = []

    def on_tracks(tracks: tuple[PipeTrack, ...]) -> None:
        announced.append(tracks)
        updates.append(asyncio.ensure_future(edge.set_tracks(tracks)))

    origin_pipe = await OriginPipe.open(
        router, remote=edge_pipe.address, host="127.0.0.1", on_tracks=on_tracks
    )
    edge_pipe.connect(origin_pipe.address)
    pipe = _Pipe(origin_pipe, edge_pipe, edge)
    pipe.announcements = announced
    yield pipe
    await edge.close()
    origin_pipe.close()


async def test_edge_viewers_decode_what_the_origin_sends_once(
    router: Router, clients: TestClients, piped: _Pipe
) -> None:
    with DecodeErrorCounter().installed() as decode_errors:
        early = [(await clients.subscribe(piped.router))[0] for _ in range(2)]
        await clients.publish(router)
        late = [(await clients.subscribe(piped.router, server_offer=True))[0] for _ in range(2)]
        origin_viewer, _ = await clients.subscribe(router)
        viewers = [*early, *late, origin_viewer]
        received = await asyncio.gather(
            *(v.wait_for_frames(video=30, audio=30, within=15) for v in viewers)
        )
    assert all(received), [(v.video.frames, v.audio.frames) for v in viewers]
    assert decode_errors.errors == 0
    assert [t.kind for t in piped.announcements[-1]] == ["audio", "video"]

    for publisher in clients.publishers:
        await publisher.close()
    assert await wait_until(lambda: piped.edge.stats().packets == piped.origin.stats().packets, 5)
    origin, edge = piped.origin.stats(), piped.edge.stats()
    print(f"pipe: origin sent {origin.packets}, edge received {edge.packets} once each")
    assert origin.packets > 100
    assert edge.duplicates == 0
    assert origin.retransmitted == 0


async def test_a_reconnecting_publisher_continues_on_the_edge(
    router: Router, clients: TestClients, piped: _Pipe
) -> None:
    await clients.publish(router)
    viewer, _ = await clients.subscribe(piped.router)
    assert await viewer.wait_for_frames(video=20, within=10)
    producers = piped.router.producers

    await clients.publish(router)
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 30, within=10)
    assert piped.router.producers == producers  # same codecs: nothing changed on the edge


async def test_lost_pipe_packets_are_nacked_and_repaired(
    router: Router, clients: TestClients, piped: _Pipe
) -> None:
    await clients.publish(router)
    viewer, _ = await clients.subscribe(piped.router)
    assert await viewer.wait_for_frames(video=10, within=10)
    send = piped.origin._send
    dropped = 0

    def lossy_send(data: bytes | bytearray) -> None:
        nonlocal dropped
        dropped += 1
        if dropped % 10 != 0:
            send(data)

    piped.origin._send = lossy_send  # type: ignore[method-assign]
    await asyncio.sleep(1.0)
    piped.origin._send = send  # type: ignore[method-assign]
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 20, within=10)
    assert piped.edge.stats().nacks > 0
    assert piped.origin.stats().retransmitted > 0


async def test_closing_the_edge_router_closes_its_pipe(router: Router, piped: _Pipe) -> None:
    await piped.router.close()
    assert piped.edge.closed


async def test_every_layer_goes_down_the_pipe_and_edge_viewers_choose_among_them(
    router: Router, clients: TestClients, piped: _Pipe
) -> None:
    """Each layer of a simulcast track is a pipe track of its own: the edge rebuilds the
    track with the same layers, and its viewers are given any of them, as the origin's."""
    publisher = SimulcastPublisher(SMALL_LAYERS, fps=15)
    try:
        session = await router.publish(await publisher.create_offer())
        await publisher.accept_answer(session.answer_sdp)
        every_layer = [("audio", None), ("video", "q"), ("video", "h"), ("video", "f")]
        assert await wait_until(
            lambda: (
                bool(piped.announcements)
                and [(t.kind, t.rid) for t in piped.announcements[-1]] == every_layer
            )
        )
        (video,) = [t for t in piped.router.tracks if t.kind == "video"]
        sizes = [(spec.width, spec.height) for spec in SMALL_LAYERS]
        assert await wait_until(lambda: [p.frame_size for p in video.layers] == sizes)
        assert [p.rid for p in video.layers] == ["q", "h", "f"]
        viewers = []
        for index in range(len(SMALL_LAYERS)):
            viewer, peer = await clients.subscribe(piped.router)
            peer.quality.choose(index)
            viewers.append(viewer)
        for viewer, size in zip(viewers, sizes, strict=True):
            assert await wait_until(
                lambda viewer=viewer, size=size: viewer.video.frame_size == size
            ), (size, viewer.video.frame_size)
            assert await viewer.wait_for_frames(video=viewer.video.frames + 5, audio=5)
    finally:
        await publisher.close()
