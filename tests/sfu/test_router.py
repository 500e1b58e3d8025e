"""The router's signaling-facing API, without running media."""

import asyncio
import gc
import logging

import pytest
from aiortc import RTCPeerConnection

from sfu import (
    IceCandidate,
    NegotiationError,
    Router,
    RouterClosed,
    RouterClosedError,
    RouterRegistry,
    SfuEvent,
    ViewerJoined,
    ViewerLeft,
)
from sfu.events import EventEmitter
from sfu.ice_config import HostNetwork
from sfu.peer import Peer
from sfu.publisher import PublisherPeer
from sfu.viewer import ViewerPeer
from testpeers import (
    TestClients,
    TestPublisher,
    TestViewer,
    client_configuration,
    video_capability,
)
from tests.sfu.forwarding_loop import options


async def test_unusable_offers_are_negotiation_errors(router: Router, clients: TestClients) -> None:
    with pytest.raises(NegotiationError):
        await router.publish("not sdp")
    viewer = TestViewer()
    clients.viewers.append(viewer)
    offer = await viewer.create_offer()
    with pytest.raises(NegotiationError):
        await router.publish(offer)  # recvonly: nothing to publish
    assert router.publisher is None

    await clients.publish(router, codec="vp8")
    h264_only = RTCPeerConnection(client_configuration())
    try:
        h264_only.addTransceiver("video", direction="recvonly").setCodecPreferences(
            [video_capability("h264")]
        )
        await h264_only.setLocalDescription(await h264_only.createOffer())
        with pytest.raises(NegotiationError):
            await router.subscribe(h264_only.localDescription.sdp)
    finally:
        await h264_only.close()
    assert router.viewers == ()


async def test_trickled_candidates_are_accepted_and_malformed_ones_refused(
    router: Router, clients: TestClients
) -> None:
    viewer = TestViewer()
    clients.viewers.append(viewer)
    session = await router.subscribe(await viewer.create_offer())
    await session.add_ice_candidate(
        IceCandidate("candidate:1 1 udp 2130706431 192.0.2.99 50000 typ host", sdp_mid="0")
    )
    await session.add_ice_candidate(IceCandidate("", sdp_mid="0"))  # end of candidates
    with pytest.raises(NegotiationError):
        await session.add_ice_candidate(IceCandidate("candidate:nonsense", sdp_mid="0"))
    await session.close()


async def test_registry_creates_finds_and_closes_routers() -> None:
    events: list[SfuEvent] = []
    registry = RouterRegistry(options(stats_interval_seconds=0), on_event=events.append)
    router = registry.get_or_create("broadcast-1")
    assert registry.get_or_create("broadcast-1") is router
    assert "broadcast-1" in registry
    assert len(registry) == 1
    session = await router.subscribe()
    assert session.offer_sdp is not None
    assert "m=audio" in session.offer_sdp
    assert "m=video" in session.offer_sdp

    await registry.close_all()
    assert registry.get("broadcast-1") is None
    assert [type(e) for e in events] == [ViewerJoined, ViewerLeft, RouterClosed]
    assert events[1] == ViewerLeft(
        router_id="broadcast-1", viewer_id=session.id, reason="router_closed"
    )
    with pytest.raises(RouterClosedError):
        await router.subscribe()


async def test_a_closing_routers_late_close_event_never_drops_its_successor() -> None:
    registry = RouterRegistry(options(stats_interval_seconds=0))
    old = registry.get_or_create("broadcast-1")
    await old.subscribe()
    closing = asyncio.ensure_future(registry.close("broadcast-1"))
    await asyncio.sleep(0)  # popped, still closing its viewer
    new = registry.get_or_create("broadcast-1")
    assert new is not old
    await registry.close("broadcast-1")  # closes the new one
    newest = registry.get_or_create("broadcast-1")
    await closing
    assert old.closed
    assert registry.get("broadcast-1") is newest
    await registry.close_all()


async def test_closing_a_router_someone_else_is_closing_waits_for_that_close() -> None:
    events: list[SfuEvent] = []
    registry = RouterRegistry(options(stats_interval_seconds=0), on_event=events.append)
    router = registry.get_or_create("broadcast-1")
    await router.subscribe()
    first = asyncio.ensure_future(registry.close("broadcast-1"))
    await asyncio.sleep(0)  # popped, still closing its viewer
    await registry.close("broadcast-1")
    assert [type(e) for e in events] == [ViewerJoined, ViewerLeft, RouterClosed]
    await first


@pytest.mark.parametrize("kind", [PublisherPeer, ViewerPeer])
async def test_a_peer_whose_router_closes_while_its_offer_is_answered_is_closed(
    clients: TestClients, kind: type[Peer]
) -> None:
    router = Router(options(stats_interval_seconds=0))
    if kind is PublisherPeer:
        publisher = TestPublisher()
        clients.publishers.append(publisher)
        answering = asyncio.ensure_future(router.publish(await publisher.create_offer()))
    else:
        viewer = TestViewer()
        clients.viewers.append(viewer)
        answering = asyncio.ensure_future(router.subscribe(await viewer.create_offer()))
    await asyncio.sleep(0)  # negotiating
    await router.close()
    with pytest.raises(RouterClosedError):
        await answering
    gc.collect()
    refused = [o for o in gc.get_objects() if type(o) is kind and o.router_id == router.id]
    assert len(refused) == 1
    assert refused[0].peer_connection.connectionState == "closed"


@pytest.mark.parametrize("server_offer", [False, True])
async def test_the_host_network_option_binds_candidates_in_the_port_range(
    clients: TestClients, server_offer: bool
) -> None:
    network = HostNetwork(port_range=(47000, 47099))
    router = Router(options(stats_interval_seconds=0, host_network=network))
    try:
        if server_offer:
            sdp = (await router.subscribe()).offer_sdp
        else:
            viewer = TestViewer()
            clients.viewers.append(viewer)
            sdp = (await router.subscribe(await viewer.create_offer())).answer_sdp
        assert sdp is not None
        ports = [
            int(line.split()[5]) for line in sdp.splitlines() if line.startswith("a=candidate:")
        ]
        assert ports
        assert all(47000 <= port <= 47099 for port in ports)
    finally:
        await router.close()


def test_a_failing_event_handler_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()
    seen: list[SfuEvent] = []

    def broken(_: SfuEvent) -> None:
        raise RuntimeError("handler bug")

    emitter.on(ViewerJoined, broken)
    emitter.on(ViewerJoined, seen.append)
    emitter.on_any(seen.append)
    event = ViewerJoined(router_id="r", viewer_id="v")
    with caplog.at_level(logging.CRITICAL, logger="sfu.events"):
        emitter.emit(event)
    assert seen == [event, event]
    emitter.off(seen.append)
    emitter.off(broken)
    emitter.emit(event)
    assert seen == [event, event]
