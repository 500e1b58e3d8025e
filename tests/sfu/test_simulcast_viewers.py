"""Chromium-like RID simulcast (testpeers.simulcast) through the SFU to viewers: every byte
a layer sends reaches its own producer, whether the RID is on every packet or on the first
ten only, and a viewer decodes whichever layer it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sfu import Router
from sfu.producer import Producer
from sfu.publisher import PublisherPeer
from sfu.track import PublishedTrack
from testpeers import TestClients, wait_until
from testpeers.simulcast import SMALL_LAYERS, SimulcastPublisher

Publish = Callable[..., Awaitable[tuple[SimulcastPublisher, PublisherPeer]]]


@pytest.fixture
async def publish(router: Router) -> AsyncIterator[Publish]:
    made: list[SimulcastPublisher] = []

    async def connect(**options: Any) -> tuple[SimulcastPublisher, PublisherPeer]:
        publisher = SimulcastPublisher(SMALL_LAYERS, **options)
        made.append(publisher)
        session = await router.publish(await publisher.create_offer())
        await publisher.accept_answer(session.answer_sdp)
        assert await publisher.wait_connected()
        return publisher, session

    yield connect
    for publisher in made:
        await publisher.close()


def _video(session: PublisherPeer) -> PublishedTrack:
    return next(track for track in session.tracks if track.kind == "video")


def _by_rid(track: PublishedTrack) -> dict[str | None, Producer]:
    return {layer.rid: layer for layer in track.offered_layers}


@pytest.mark.parametrize("rid_packets", [10, None], ids=["rid-on-first-10", "rid-on-every"])
async def test_every_byte_a_layer_sends_reaches_its_producer_and_no_other(
    publish: Publish, rid_packets: int | None
) -> None:
    publisher, session = await publish(rid_packets=rid_packets, audio=False, fps=15)
    assert publisher.simulcast
    layers = _by_rid(_video(session))
    assert set(layers) == {"q", "h", "f"}
    assert await wait_until(lambda: all(p.packets_received > 30 for p in layers.values()))
    for rid in layers:
        publisher.set_layer_active(str(rid), False)

    def received_and_sent() -> dict[str, tuple[int, int]]:
        return {
            str(rid): (producer.bytes_received, publisher.layer(str(rid)).bytes_sent)
            for rid, producer in layers.items()
        }

    assert await wait_until(
        lambda: all(got == sent for got, sent in received_and_sent().values()), within=3
    ), received_and_sent()
    assert session.packets_dropped == 0


async def test_a_viewer_decodes_each_layer_it_is_given(
    publish: Publish, router: Router, clients: TestClients
) -> None:
    """One viewer per layer, each with its fixed choice (the watch page's quality menu)."""
    _, session = await publish(fps=15)
    video = _video(session)
    assert await wait_until(lambda: all(p.frame_size for p in video.offered_layers))
    viewers = []
    for index in range(len(SMALL_LAYERS)):
        viewer, peer = await clients.subscribe(router)
        peer.quality.choose(index)
        viewers.append(viewer)
    for viewer, spec in zip(viewers, SMALL_LAYERS, strict=True):
        assert await wait_until(
            lambda viewer=viewer, spec=spec: viewer.video.frame_size == (spec.width, spec.height)
        ), (spec.rid, viewer.video.frame_size)
        frames = viewer.video.frames
        assert await viewer.wait_for_frames(frames + 10), spec.rid
        assert viewer.video.frame_size == (spec.width, spec.height)
