"""Real aiortc peers over the machine's own address: forwarding without codecs."""

import asyncio
import socket
import time
from pathlib import Path

import pytest

from sfu import Router
from sfu.aiortc_adapter import INGEST_RECEIVE_BUFFER
from sfu.keyframe import KEYFRAME_DETECTORS
from testpeers import CodecSpy, DecodeErrorCounter, TestClients, wait_until
from testpeers.aiortc_hooks import decoder_thread, sender_report_state

VIEWERS = 5
RMEM_MAX = int(Path("/proc/sys/net/core/rmem_max").read_text())
MIN_FRAMES = 50


@pytest.mark.parametrize(("codec", "mime_type"), [("vp8", "video/VP8"), ("h264", "video/H264")])
async def test_viewers_decode_forwarded_media_and_the_server_runs_no_codec(
    router: Router, clients: TestClients, codec: str, mime_type: str
) -> None:
    spy = CodecSpy()
    with spy.installed(), DecodeErrorCounter().installed() as decode_errors:
        publisher, _ = await clients.publish(router, codec=codec)
        viewers = [
            (await clients.subscribe(router, server_offer=i % 2 == 1))[0] for i in range(VIEWERS)
        ]
        received = await asyncio.gather(
            *(v.wait_for_frames(video=MIN_FRAMES, audio=MIN_FRAMES, within=20) for v in viewers)
        )
        # Sender reports carry the forwarded counts (A/V sync and stats need them).
        for down_track in (c for v in router.viewers for c in v.down_tracks):
            # read first: it takes what the C loop sent (sfu.native) into the report too
            sent = down_track.packets_sent
            ntp, _, octets, packets = sender_report_state(down_track.sender)
            assert octets > 0
            assert ntp > 0
            assert packets == sent
        remote_outbound = [
            s
            for v in viewers
            for s in (await v.pc.getStats()).values()
            if s.type == "remote-outbound-rtp" and s.kind == "video"
        ]
        assert len(remote_outbound) == VIEWERS
        assert all(s.packetsSent > 0 for s in remote_outbound)
        server_decoder_threads = {decoder_thread(p.receiver) for p in router.producers} - {None}
        # The publisher's ICE sockets hold ≈ 2 s of its packets while the loop is busy.
        for producer in router.producers:
            for protocol in producer.receiver.transport.transport._connection._protocols:
                sock = protocol.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(
                    INGEST_RECEIVE_BUFFER, RMEM_MAX
                )
        server_senders = {slot.sender for v in router.viewers for slot in v.slots}

    assert all(received), [(v.video.frames, v.audio.frames) for v in viewers]
    detect = KEYFRAME_DETECTORS[mime_type.lower()]
    for viewer in viewers:
        assert viewer.video.frames >= MIN_FRAMES
        assert viewer.audio.frames >= MIN_FRAMES
        assert viewer.video.first_payload is not None
        assert detect(viewer.video.first_payload)
        assert viewer.video.first_frame_matches_pattern
    assert decode_errors.errors == 0
    assert {p.mime_type for p in router.producers} == {"audio/opus", mime_type}

    # The spy saw the clients' codecs, and none of the server's.
    assert len(server_decoder_threads) == 2
    assert len(server_senders) == 2 * VIEWERS
    assert sorted(m for m, _ in spy.encoders) == sorted(["audio/opus", mime_type])
    assert sorted(m for m, _ in spy.decoders) == sorted(["audio/opus", mime_type] * VIEWERS)
    assert not [owner for _, owner in spy.decoders if owner in server_decoder_threads]
    assert not [owner for _, owner in spy.encoders if owner in server_senders]
    encoder_owners = {owner for _, owner in spy.encoders}
    assert encoder_owners == {t.sender for t in publisher.pc.getTransceivers()}


async def test_late_viewer_starts_on_a_requested_keyframe_within_a_second(
    router: Router, clients: TestClients
) -> None:
    with DecodeErrorCounter().installed() as decode_errors:
        started = time.monotonic()
        await clients.publish(router)
        early, _ = await clients.subscribe(router)
        assert await early.wait_for_frames(video=30)
        await asyncio.sleep(started + 3.0 - time.monotonic())

        late, _ = await clients.subscribe(router)
        assert await late.wait_for_frames(video=10, within=5)

    assert late.video.first_frame_at is not None
    first_frame_after = late.video.first_frame_at - late.created_at
    print(f"late join: first decoded frame after {first_frame_after * 1000:.0f} ms")
    assert first_frame_after < 1.0
    assert late.video.first_payload is not None
    assert KEYFRAME_DETECTORS["video/vp8"](late.video.first_payload)
    assert late.video.first_frame_matches_pattern
    assert decode_errors.errors == 0


async def test_a_viewer_whose_forwarding_fails_does_not_cost_the_others_a_packet(
    router: Router, clients: TestClients, caplog: pytest.LogCaptureFixture
) -> None:
    await clients.publish(router)
    _, broken_session = await clients.subscribe(router, decode=False)
    healthy, _ = await clients.subscribe(router, decode=False)
    video = next(p for p in router.producers if p.kind == "video")
    assert await wait_until(lambda: len(video.down_tracks) == 2)
    broken_track = next(c for c in video.down_tracks if c.viewer_id == broken_session.id)

    def fail(*args: object) -> None:
        raise RuntimeError("a broken viewer")

    broken_track.forward = fail  # type: ignore[method-assign]
    before = healthy.video.packets
    assert await wait_until(lambda: healthy.video.packets >= before + 100)
    assert caplog.text.count("forwarding failed") == 1  # then it is left out, not retried


async def test_a_viewer_whose_keyframe_request_the_publisher_ignores_still_gets_a_picture(
    router: Router, clients: TestClients
) -> None:
    """A browser honours at most one keyframe request per 300 ms; this publisher, one per
    second. A viewer joining within that second of another's request is ignored at first,
    and starts once the SFU asks again."""
    publisher, _ = await clients.publish(router, min_keyframe_interval=1.0)
    first, _ = await clients.subscribe(router)
    assert await first.wait_for_frames(video=1)
    second, _ = await clients.subscribe(router)  # its request comes within the second
    assert await second.wait_for_frames(video=10, within=10)
    assert publisher.keyframe_requests_ignored >= 1
