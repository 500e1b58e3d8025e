"""sfu.recorder: real aiortc publishers through a router, recorded without a decoder or an
encoder, the files decoded end to end with PyAV in the test: frames, picture sizes,
duration, audio/video offset, across a reconnect, a replaced track and unrepaired loss;
limits stop the recording while viewers keep receiving."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sfu import RecordingSpec, RecordingStarted, RecordingStopped, Router
from sfu.recorder import OPUS_SILENCE, opus_samples
from testpeers import CodecSpy, TestClients, aiortc_hooks, wait_until
from testpeers.simulcast import SMALL_LAYERS, SimulcastPublisher
from tests.sfu.recordings import SyncPublishers, decode

# The publisher's first keyframe may take a keyframe request or two.
START_WITHIN = 5.0


class Events:
    def __init__(self, router: Router) -> None:
        self.started: list[RecordingStarted] = []
        self.stopped: list[RecordingStopped] = []
        router.events.on(RecordingStarted, self.started.append)
        router.events.on(RecordingStopped, self.stopped.append)

    async def wait_stopped(self) -> RecordingStopped:
        assert await wait_until(lambda: bool(self.stopped), within=10)
        return self.stopped[-1]


def _spec(tmp_path: Path, **limits: float) -> RecordingSpec:
    return RecordingSpec(recording_id="rec-1", directory=tmp_path / "spool", **limits)  # type: ignore[arg-type]


def _server_codecs_opened(router: Router) -> list[str]:
    recorder = router.recorder
    assert recorder is not None
    return [
        track.kind
        for track in recorder._tracks.values()
        if track.stream.codec_context is not None and track.stream.codec_context.is_open
    ]


async def test_vp8_opus_across_a_reconnect_and_a_switch_decodes_end_to_end(
    router: Router, clients: TestClients, tmp_path: Path
) -> None:
    events = Events(router)
    sync = SyncPublishers(clients)
    spy = CodecSpy()
    with spy.installed():
        first, session = await sync.publish(router)
        router.start_recording(_spec(tmp_path))
        router.start_recording(_spec(tmp_path))  # the same one again: nothing changes
        assert await wait_until(lambda: bool(events.started), within=START_WITHIN)
        began = time.monotonic()
        await asyncio.sleep(2.0)
        # the publisher goes away (its page closed) and comes back within the grace period
        await first.close()
        router.publisher_gone(session.id)
        await asyncio.sleep(1.0)
        second, _ = await sync.publish(router)
        await asyncio.sleep(2.0)
        await sync.switch(second, width=640, height=360)  # camera → screen, replaceTrack
        await asyncio.sleep(2.0)
        assert _server_codecs_opened(router) == []
        router.stop_recording()
        ended = time.monotonic()
        stopped = await events.wait_stopped()
    server_senders = {
        s for s in (t.sender for p in clients.publishers for t in p.pc.getTransceivers())
    }
    assert spy.decoders == []
    assert {owner for _, owner in spy.encoders} <= server_senders  # the publishers' alone

    assert stopped.reason == "stopped"
    started = events.started[0]
    assert started.container == "webm"
    path = Path(started.path)
    assert path == tmp_path / "spool" / "rec-1.webm"
    assert stopped.path == str(path)
    decoded = decode(path)  # every frame decodes, or this raises
    assert stopped.size == decoded.size
    assert decoded.video_codec == "vp8"
    assert decoded.audio_codec == "opus"
    assert (stopped.video_codec, stopped.audio_codec) == ("vp8", "opus")
    assert decoded.sizes == {(320, 240), (640, 360)}
    assert (stopped.width, stopped.height) == (640, 360)  # the largest it holds
    assert stopped.video_frames == len(decoded.video)
    # the broadcast's own timeline: the reconnect's second is in the file, not cut out
    broadcast = ended - began
    assert abs(decoded.container_duration - broadcast) < 0.5, (
        decoded.container_duration,
        broadcast,
    )
    assert abs(stopped.duration - decoded.container_duration) < 0.01
    assert abs(decoded.audio_end - decoded.container_duration) < 0.1  # silence fills the gap
    # every frame the publishers sent while recording, but for the reconnect's first ones
    assert len(decoded.video) >= 0.8 * 30 * (broadcast - 1.0)
    times = [t for t, _ in decoded.video]
    assert times == sorted(times)
    offsets = decoded.sync_offsets(sync.marks.period)
    assert len(offsets) >= 4
    assert max(abs(o) for o in offsets) < 0.08, offsets


def _video_transport(session: object) -> aiortc_hooks.RTCDtlsTransport:
    pc = session.peer_connection  # type: ignore[attr-defined]
    transceiver = next(t for t in pc.getTransceivers() if t.kind == "video")
    transport: aiortc_hooks.RTCDtlsTransport = transceiver.receiver.transport
    return transport


def _lose_every(session: object, payload_type: int, nth: int, lost: set[int]) -> None:
    """Every ``nth`` video packet never reaches the SFU, nor does its retransmission."""

    def keep(data: bytes) -> bool:
        if data[1] & 0x7F != payload_type:
            return True
        sequence_number = int.from_bytes(data[2:4], "big")
        if sequence_number % nth == 0:
            lost.add(sequence_number)
            return False
        return True

    aiortc_hooks.filter_incoming_rtp(_video_transport(session), keep)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_unrepaired_loss_costs_frames_up_to_the_next_keyframe_and_all_decode(
    router: Router, clients: TestClients, tmp_path: Path, codec: str
) -> None:
    """aiortc's H.264 encoder sends a keyframe every 12 frames; its VP8 encoder only when
    asked: the recording asks after each loss."""
    events = Events(router)
    sync = SyncPublishers(clients)
    publisher, session = await sync.publish(router, codec=codec)
    router.start_recording(_spec(tmp_path))
    assert await wait_until(lambda: bool(events.started), within=START_WITHIN)
    video = next(p for p in router.producers if p.kind == "video")
    lost: set[int] = set()
    _lose_every(session, video.codec.payloadType or 0, 37, lost)  # not in step with the marks
    requests_before = len(publisher.keyframe_requests)
    sent_before = sync.frames_sent
    began = time.monotonic()
    await asyncio.sleep(3.0)
    sent = sync.frames_sent - sent_before
    await router.close()  # ends the recording too
    ended = time.monotonic()
    stopped = await events.wait_stopped()
    assert stopped.reason == "ended"
    assert len(lost) >= 2
    if codec == "vp8":
        assert len(publisher.keyframe_requests) - requests_before >= len(lost) - 1
    path = Path(stopped.path)
    decoded = decode(path)  # every frame decodes, or this raises
    if codec == "h264":
        assert path.suffix == ".mp4"
        # the index in front, no longer fragmented
        assert decoded.boxes.index("moov") < decoded.boxes.index("mdat"), decoded.boxes
        assert "moof" not in decoded.boxes
    assert (decoded.video_codec, decoded.audio_codec) == (codec, "opus")
    assert decoded.sizes == {(320, 240)}
    assert (stopped.width, stopped.height) == (320, 240)
    assert stopped.video_frames == len(decoded.video)
    assert abs(stopped.duration - decoded.container_duration) < 0.01
    assert abs(decoded.container_duration - (ended - began)) < 0.2
    # each loss costs its frame and those up to the next keyframe (≤ 0.5 s + a request)
    frames_after = sum(
        1 for t, _ in decoded.video if t >= decoded.container_duration - (ended - began)
    )
    assert frames_after < sent - len(lost)
    assert frames_after > sent - len(lost) * 30
    # in sync wherever a loss left a flash
    offsets = decoded.sync_offsets(sync.marks.period)
    assert max((abs(o) for o in offsets), default=0.0) < 0.08, offsets


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_bytes": 20_000}, "size_limit"),
        ({"max_seconds": 1.0}, "duration_limit"),
        ({"min_free_bytes": 1 << 62}, "disk_full"),  # more than any disk has free
    ],
)
async def test_a_limit_stops_the_recording_and_viewers_keep_receiving(
    router: Router,
    clients: TestClients,
    tmp_path: Path,
    limits: dict[str, float],
    reason: str,
) -> None:
    events = Events(router)
    await SyncPublishers(clients).publish(router)
    viewer, _ = await clients.subscribe(router, decode=False)
    assert await viewer.wait_for_frames(video=10, audio=10)
    router.start_recording(_spec(tmp_path, **limits))
    stopped = await events.wait_stopped()
    assert stopped.reason == reason
    assert stopped.detail
    assert router.recording is None
    video, audio = viewer.video.frames, viewer.audio.frames
    assert await viewer.wait_for_frames(video=video + 30, audio=audio + 50)
    if reason == "disk_full":
        assert stopped.size == 0  # stopped before its first frame was written
        assert not events.started
        return
    decoded = decode(Path(stopped.path))
    assert stopped.size == decoded.size
    assert stopped.video_frames == len(decoded.video) > 0
    if reason == "size_limit":
        assert 20_000 <= decoded.size < 20_000 + 15_000  # about a second past the limit
    else:
        assert 1.0 <= decoded.container_duration < 1.1


async def test_the_recording_status_and_what_stop_and_close_report(
    router: Router, clients: TestClients, tmp_path: Path
) -> None:
    events = Events(router)
    router.start_recording(_spec(tmp_path))  # before anyone publishes
    status = router.recording
    assert status is not None
    assert status.recording_id == "rec-1"
    assert status.path is None  # the codecs are not known yet
    assert status.bytes == 0
    await SyncPublishers(clients).publish(router)
    assert await wait_until(lambda: bool(events.started), within=START_WITHIN)
    assert await wait_until(lambda: (router.recording or status).seconds >= 1.0)
    status = router.recording
    assert status is not None
    assert status.path == tmp_path / "spool" / "rec-1.webm"
    assert status.bytes > 0
    # another recording stops this one first
    router.start_recording(RecordingSpec(recording_id="rec-2", directory=tmp_path / "spool"))
    first = await events.wait_stopped()
    assert (first.recording_id, first.reason) == ("rec-1", "stopped")
    assert await wait_until(lambda: len(events.started) == 2, within=START_WITHIN)
    await router.close()
    assert await wait_until(lambda: len(events.stopped) == 2)
    second = events.stopped[-1]
    assert (second.recording_id, second.reason) == ("rec-2", "ended")
    assert second.path == str(tmp_path / "spool" / "rec-2.webm")
    assert decode(Path(second.path)).video


async def test_nothing_published_nothing_recorded(router: Router, tmp_path: Path) -> None:
    events = Events(router)
    router.start_recording(_spec(tmp_path))
    router.stop_recording()
    stopped = await events.wait_stopped()
    assert (stopped.reason, stopped.size, stopped.path) == ("stopped", 0, "")
    assert "nothing was recorded" in stopped.detail
    assert not events.started


async def test_a_new_publisher_with_another_codec_stops_the_recording(
    router: Router, clients: TestClients, tmp_path: Path
) -> None:
    events = Events(router)
    sync = SyncPublishers(clients)
    first, session = await sync.publish(router, codec="vp8")
    router.start_recording(_spec(tmp_path))
    assert await wait_until(lambda: bool(events.started), within=START_WITHIN)
    await first.close()
    router.publisher_gone(session.id)
    await sync.publish(router, codec="h264")
    stopped = await events.wait_stopped()
    assert stopped.reason == "stopped"
    assert "H264" in stopped.detail
    assert decode(Path(stopped.path)).video  # what came before is kept


async def test_simulcast_records_the_top_layer(router: Router, tmp_path: Path) -> None:
    events = Events(router)
    publisher = SimulcastPublisher(SMALL_LAYERS, fps=15)
    try:
        session = await router.publish(await publisher.create_offer())
        await publisher.accept_answer(session.answer_sdp)
        router.start_recording(_spec(tmp_path))
        assert await wait_until(lambda: bool(events.started), within=START_WITHIN)
        await asyncio.sleep(2.0)
        router.stop_recording()
        stopped = await events.wait_stopped()
    finally:
        await publisher.close()
    top = (SMALL_LAYERS[-1].width, SMALL_LAYERS[-1].height)
    decoded = decode(Path(stopped.path))
    # the layers' order is learned from their keyframes: the file may begin on a lower one
    assert (decoded.video[-1][1].width, decoded.video[-1][1].height) == top
    assert sum(1 for _, f in decoded.video if (f.width, f.height) == top) >= 15
    assert (stopped.width, stopped.height) == top  # not the lower layer it may begin on


class _BrokenTap:
    waiting_keyframe = False

    def __init__(self) -> None:
        self.calls = 0

    def on_packet(self, packet: object, now: float) -> None:
        self.calls += 1
        raise RuntimeError("broken")


async def test_a_tap_that_raises_is_removed_and_viewers_keep_receiving(
    router: Router, clients: TestClients, caplog: pytest.LogCaptureFixture
) -> None:
    await clients.publish(router)
    viewer, _ = await clients.subscribe(router, decode=False)
    assert await viewer.wait_for_frames(video=5, audio=5)
    broken = _BrokenTap()
    video = next(p for p in router.producers if p.kind == "video")
    video.add_tap(broken)
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 20)
    assert broken.calls == 1
    assert "packet tap failed" in caplog.text


def test_opus_samples_from_the_toc() -> None:
    assert opus_samples(OPUS_SILENCE) == 960  # CELT 20 ms, one frame
    assert opus_samples(bytes([0x78 | 0x00, 0])) == 960  # hybrid fullband 20 ms (config 15)
    assert opus_samples(bytes([0x18, 0])) == 2880  # SILK 60 ms (config 3)
    assert opus_samples(bytes([0xF8 | 0x01, 0])) == 1920  # two CELT 20 ms frames
    assert opus_samples(bytes([0xF3, 0x05])) == 5 * 480  # code 3: five CELT 10 ms frames
    assert opus_samples(b"") == 0


async def test_a_directory_that_cannot_be_made_fails_the_recording_not_the_broadcast(
    router: Router, clients: TestClients, tmp_path: Path
) -> None:
    events = Events(router)
    await clients.publish(router)
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    router.start_recording(RecordingSpec(recording_id="rec-1", directory=blocker / "spool"))
    stopped = await events.wait_stopped()
    assert stopped.reason == "failed"
    assert "directory" in stopped.detail
    viewer, _ = await clients.subscribe(router, decode=False)
    assert await viewer.wait_for_frames(video=10, audio=10)
