"""ICE consent freshness on the SFU's side (sfu/ice_config.py): a publisher that never
answers consent checks but keeps sending media stays connected (FFmpeg's WHIP muxer is
such a client); one that goes silent as well is dropped."""

from __future__ import annotations

import pytest
from aioice import Connection
from aiortc import RTCPeerConnection

from sfu import PublisherDisconnected, Router, ice_config
from testpeers import TestClients, wait_until


def _ice_connection(pc: RTCPeerConnection) -> Connection:
    connection: Connection = pc.getTransceivers()[0].sender.transport.transport._connection
    return connection


@pytest.fixture(autouse=True)
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ice_config, "CONSENT_INTERVAL_SECONDS", 0.2)
    monkeypatch.setattr(ice_config, "CONSENT_IDLE_SECONDS", 2.0)


async def test_a_peer_that_ignores_consent_checks_but_sends_media_stays(
    router: Router, clients: TestClients
) -> None:
    disconnected: list[PublisherDisconnected] = []
    router.events.on(PublisherDisconnected, disconnected.append)
    publisher, session = await clients.publish(router, fps=15)
    assert await wait_until(lambda: session.connection_state == "connected")
    client_ice = _ice_connection(publisher.pc)
    ignored: list[object] = []
    client_ice.request_received = lambda message, *rest: ignored.append(message)  # type: ignore[method-assign]
    viewer, _ = await clients.subscribe(router)

    # Far more than 6 unanswered checks (0.2 s apart), yet media keeps flowing.
    await viewer.wait_for_frames(video=5)
    frames = viewer.video.frames
    assert await wait_until(lambda: len(ignored) >= 10, 10)
    assert session.connection_state == "connected"
    assert not disconnected
    assert await wait_until(lambda: viewer.video.frames > frames + 20, 10)

    # Silent as well: the SFU drops it once the idle time has passed.
    for pair in client_ice._nominated.values():
        pair.protocol.transport.sendto = lambda *args: None  # type: ignore[method-assign]
    assert await wait_until(lambda: bool(disconnected), 10)
