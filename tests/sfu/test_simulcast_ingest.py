"""Simulcast ingest between real aiortc peers: a RID simulcast publisher
(``testpeers.simulcast``, sending as Chromium does) to a router, whose publisher peer
routes each layer to its own producer."""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCDtlsTransport
from aiortc.rtp import RtpPacket

from sfu import Producer, ProducerAdded, PublisherPeer, Router
from sfu.track import PublishedTrack
from testpeers import aiortc_hooks, wait_until
from testpeers.simulcast import SMALL_LAYERS, SimulcastPublisher


async def _publish(router: Router, publisher: SimulcastPublisher) -> PublisherPeer:
    session = await router.publish(await publisher.create_offer())
    await publisher.accept_answer(session.answer_sdp)
    return session


@pytest.fixture
async def publisher() -> AsyncIterator[SimulcastPublisher]:
    publisher = SimulcastPublisher(SMALL_LAYERS, fps=15)
    yield publisher
    await publisher.close()


def _video(session: PublisherPeer) -> PublishedTrack:
    return next(t for t in session.tracks if t.kind == "video")


def _layer(session: PublisherPeer, rid: str) -> Producer:
    return next(p for p in _video(session).offered_layers if p.rid == rid)


def _sfu_transport(session: PublisherPeer) -> RTCDtlsTransport:
    transceiver = next(t for t in session.peer_connection.getTransceivers() if t.kind == "video")
    transport: RTCDtlsTransport = transceiver.receiver.transport
    return transport


async def test_each_layer_reaches_its_own_producer_in_size_order(
    router: Router, publisher: SimulcastPublisher
) -> None:
    added: list[ProducerAdded] = []
    router.events.on(ProducerAdded, added.append)
    session = await _publish(router, publisher)
    assert publisher.simulcast  # the answer took the three rids
    video = _video(session)
    assert [p.rid for p in video.offered_layers] == ["q", "h", "f"]
    assert [p.rid for p in router.producers if p.kind == "video"] == ["q", "h", "f"]
    audio = next(t for t in session.tracks if t.kind == "audio")
    assert not audio.simulcast
    assert audio.offered_layers[0].rid is None
    assert await wait_until(lambda: all(p.frame_size for p in video.offered_layers), within=10)
    assert [p.frame_size for p in video.layers] == [(s.width, s.height) for s in SMALL_LAYERS]
    for spec in SMALL_LAYERS:
        producer = _layer(session, spec.rid)
        sent = publisher.layer(spec.rid)
        assert producer.keyframes_received >= 1
        # only what that layer sent (a mix would count the others' packets too)
        assert 0 < producer.packets_received <= sent.packets_sent
    assert await wait_until(lambda: audio.offered_layers[0].packets_received > 0)
    assert session.packets_dropped == 0
    assert await wait_until(lambda: len(added) == 4)  # each layer is announced, with its rid
    assert [(e.kind, e.rid) for e in added] == [
        ("audio", None),
        ("video", "q"),
        ("video", "h"),
        ("video", "f"),
    ]
    assert [(p.kind, p.rid) for p in router.stats().producers] == [(e.kind, e.rid) for e in added]


async def test_a_layers_losses_are_repaired_by_its_own_retransmissions(
    router: Router, publisher: SimulcastPublisher
) -> None:
    session = await _publish(router, publisher)
    middle = _layer(session, "h")
    assert await wait_until(lambda: middle.packets_received > 20)
    ssrc = publisher.layer("h").ssrc
    dropped: list[int] = []
    drop = random.Random(7)

    def keep(data: bytes) -> bool:
        # every layer's packets but a tenth of h's media (not its retransmissions)
        if struct.unpack_from("!L", data, 8)[0] != ssrc or len(dropped) >= 20:
            return True
        if drop.random() < 0.1:
            dropped.append(struct.unpack_from("!H", data, 2)[0])
            return False
        return True

    aiortc_hooks.filter_incoming_rtp(_sfu_transport(session), keep)
    assert await wait_until(lambda: len(dropped) >= 5)
    lost = list(dropped)
    # each NACK names h's media SSRC; its RTX comes back on h's RTX SSRC and is unwrapped
    assert await wait_until(lambda: all(middle.cached_packet(s) is not None for s in lost))
    assert publisher.layer("h").retransmitted >= len(lost)
    assert publisher.layer("q").nacks == publisher.layer("f").nacks == 0


async def test_a_keyframe_request_names_its_layers_ssrc(
    router: Router, publisher: SimulcastPublisher
) -> None:
    session = await _publish(router, publisher)
    top = _layer(session, "f")
    assert await wait_until(lambda: top.keyframes_received >= 1)
    before = {rid: publisher.layer(rid).keyframe_requests for rid in ("q", "h", "f")}
    await top.request_keyframe()
    assert await wait_until(lambda: publisher.layer("f").keyframe_requests > before["f"])
    assert publisher.layer("q").keyframe_requests == before["q"]
    assert publisher.layer("h").keyframe_requests == before["h"]


async def test_strangers_are_dropped_and_a_retransmission_stream_waits_for_its_media(
    router: Router, publisher: SimulcastPublisher
) -> None:
    session = await _publish(router, publisher)
    publisher.set_layer_active("f", False)  # f sends nothing yet
    quarter, top = _layer(session, "q"), _layer(session, "f")
    assert await wait_until(lambda: quarter.packets_received > 0)
    negotiated = publisher._negotiated
    assert negotiated is not None
    assert negotiated.rtx_payload_type is not None
    transport = next(
        t.sender.transport for t in publisher.pc.getTransceivers() if t.kind == "video"
    )

    sequence_numbers = itertools.count(1)  # SRTP refuses a replayed (SSRC, number)

    async def send(ssrc: int, payload: bytes, *, pt: int, repaired: str | None = None) -> None:
        packet = RtpPacket(
            payload_type=pt, sequence_number=next(sequence_numbers), timestamp=0, ssrc=ssrc
        )
        packet.payload = payload
        packet.extensions.repaired_rtp_stream_id = repaired
        await aiortc_hooks.send_rtp(transport, packet.serialize(negotiated.extensions))

    # a hundred unknown SSRCs without a rid: dropped, nothing learned
    for _ in range(100):
        await send(random.getrandbits(32), b"\x10\x00\x00", pt=negotiated.payload_type)
    assert await wait_until(lambda: session.packets_dropped >= 100)
    # f's retransmission stream speaks first (Chromium probes on it): it waits
    rtx_ssrc = random.getrandbits(32)
    await send(rtx_ssrc, b"\x12\x34\x10\x00\x00", pt=negotiated.rtx_payload_type, repaired="f")
    assert await wait_until(lambda: session.packets_dropped >= 101)
    assert top.packets_received == 0
    publisher.set_layer_active("f", True)
    assert await wait_until(lambda: top.packets_received > 0)
    # now known, without its rid, it repairs f: aiortc unwraps it to f's sequence number
    await send(rtx_ssrc, b"\x12\x34\x10\x00\x00", pt=negotiated.rtx_payload_type)
    assert await wait_until(lambda: top.cached_packet(0x1234) is not None)
    assert session.packets_dropped == 101
