"""Recording live broadcasts through the real ASGI app, the in-process SFU and real aiortc
peers: a broadcast becomes a ``ready`` recording whose file decodes (WebM from the studio,
one recording across a publisher reconnect; MP4 from an H.264 WHIP encoder), the studio
and the watch page hear it, turning ``record`` off and on acts at once, limits and the
free-disk guard stop it with their reason while the viewers play on, a server stopping
keeps it as ``interrupted``, and a file a crash left open is finished at start."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient
from django.utils import timezone
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_create, stream_go_live
from recordings.models import Recording
from recordings.services import recording_begin
from signaling.gateway import gateway, recordings_repair
from signaling.gateway.embedded import EmbeddedGateway
from testpeers import TestPublisher, TestViewer, matches_pattern, wait_until, wait_until_awaited
from tests.signaling.http_clients import WhipClient
from tests.signaling.test_consumers import Socket, go_live, watch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


@pytest.fixture
async def owner() -> User:
    return await database_sync_to_async(User.objects.create_user)("owner", password="pw")


@pytest.fixture
async def stream(owner: User) -> AsyncIterator[Stream]:
    parts: tuple[Stream, IssuedKey] = await database_sync_to_async(stream_create)(
        owner=owner, title="Recorded"
    )
    yield parts[0]
    await gateway.close_all()


async def rows(stream: Stream) -> list[Recording]:
    return await database_sync_to_async(lambda: list(Recording.objects.filter(stream=stream)))()


async def finished(stream: Stream, within: float = 20) -> Recording:
    """The stream's one recording, once it is no longer ``recording``."""

    def done() -> Recording | None:
        return Recording.objects.filter(stream=stream).exclude(state="recording").first()

    deadline = asyncio.get_running_loop().time() + within
    while (recording := await database_sync_to_async(done)()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the recording did not finish"
        await asyncio.sleep(0.1)
    return recording


def decoded(path: Path) -> dict[str, Any]:
    """Every video frame of the file decoded: how many, their size, whether the first shows
    the test pattern; the audio frames; the container's duration."""
    with av.open(str(path)) as container:
        video = audio = 0
        size = None
        first_matches = None
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                if video == 0:
                    first_matches = matches_pattern(frame)
                video += 1
                size = (frame.width, frame.height)
            else:
                audio += 1
        duration = (container.duration or 0) / av.time_base
    return {
        "video": video,
        "audio": audio,
        "size": size,
        "first_matches": first_matches,
        "duration": duration,
    }


async def publish_again(studio: Socket) -> TestPublisher:
    publisher = TestPublisher()
    await studio.send({"type": "offer", "sdp": await publisher.create_offer()})
    await publisher.accept_answer((await studio.expect("answer"))["sdp"])
    return publisher


async def test_a_broadcast_becomes_one_ready_recording_that_plays(
    owner: User, stream: Stream, recording_dirs: dict[str, Path]
) -> None:
    studio, publisher = await go_live(stream, owner)
    began = await studio.expect("recording")
    assert began["state"] == "recording"
    assert began["started_at"]
    socket, viewer = await watch(stream)
    assert await viewer.wait_for_frames(video=30, within=20)

    # The broadcaster's connection drops and comes back within the grace period: the same
    # recording goes on (one row, one file).
    await publisher.close()
    publisher = await publish_again(studio)
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 30, 20)
    status = await gateway.recording_status(stream_id=str(stream.pk))
    assert status is not None
    assert status.recording_id == began["id"]

    await studio.send({"type": "end"})
    done = await studio.expect("recording")
    assert (done["state"], done["reason"]) == ("ready", "ended")
    # The watch page is told the state only (it reloads its past broadcasts when ready).
    while (heard := await socket.expect("recording"))["state"] == "recording":
        pass
    assert heard == {"type": "recording", "state": "ready"}
    recording = await finished(stream)
    assert [r.pk for r in await rows(stream)] == [recording.pk]
    assert str(recording.pk) == began["id"]
    assert (recording.container, recording.video_codec, recording.audio_codec) == (
        "webm",
        "vp8",
        "opus",
    )
    assert (recording.width, recording.height) == (320, 240)
    assert recording.size > 0
    assert recording.duration > 2
    stored = recording_dirs["storage"] / recording.file.name
    assert stored.stat().st_size == recording.size
    assert not list(recording_dirs["spool"].iterdir())  # moved, not copied
    played = decoded(stored)
    assert played["video"] == recording.video_frames > 30
    assert played["audio"] > 0
    assert played["size"] == (320, 240)
    assert played["first_matches"] is True
    assert abs(played["duration"] - recording.duration) < 0.5
    for peer in (publisher, viewer):
        await peer.close()
    for sock in (studio, socket):
        await sock.close()


async def test_a_studio_opened_while_recording_is_told_so(owner: User, stream: Stream) -> None:
    studio, publisher = await go_live(stream, owner)
    began = await studio.expect("recording")

    second = Socket(f"/ws/studio/{stream.slug}/", owner)
    welcome = await second.open()

    assert welcome["recording"]["id"] == began["id"]
    assert welcome["recording"]["state"] == "recording"
    await publisher.close()
    for sock in (studio, second):
        await sock.close()


async def test_a_stream_that_does_not_record_makes_no_recording(
    owner: User, stream: Stream
) -> None:
    await database_sync_to_async(Stream.objects.filter(pk=stream.pk).update)(record=False)
    await database_sync_to_async(stream.refresh_from_db)()
    studio, publisher = await go_live(stream, owner)
    socket, viewer = await watch(stream)
    assert await viewer.wait_for_frames(video=10, within=20)

    assert await gateway.recording_status(stream_id=str(stream.pk)) is None
    assert await rows(stream) == []
    assert not [m for m in studio.inbox if m["type"] == "recording"]
    for peer in (publisher, viewer):
        await peer.close()
    for sock in (studio, socket):
        await sock.close()


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("RECORDING_MAX_BYTES", 40_000, "size_limit"),
        ("RECORDING_MIN_FREE_BYTES", 2**62, "disk_full"),
    ],
)
async def test_a_limit_stops_the_recording_with_its_reason_and_viewers_play_on(
    owner: User, stream: Stream, settings: Settings, setting: str, value: int, reason: str
) -> None:
    settings.ONAIR = {**settings.ONAIR, setting: value}
    studio, publisher = await go_live(stream, owner)
    socket, viewer = await watch(stream)
    assert await viewer.wait_for_frames(video=10, within=20)

    stopped = await studio.expect("recording")
    while stopped["state"] == "recording":
        stopped = await studio.expect("recording")
    assert stopped["reason"] == reason
    assert stopped["detail"]
    recording = await finished(stream)
    api = APIClient()
    await database_sync_to_async(api.force_login)(owner)
    shown = await database_sync_to_async(api.get)(f"/api/v1/recordings/{recording.pk}/")
    assert (shown.json()["stop_reason"], shown.json()["detail"]) == (reason, stopped["detail"])

    # The broadcast goes on, and a publisher reconnecting does not start recording again.
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 30, 20)
    await publisher.close()
    publisher = await publish_again(studio)
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 30, 20)
    assert len(await rows(stream)) == 1
    assert (await database_sync_to_async(Stream.objects.get)(pk=stream.pk)).is_live
    for peer in (publisher, viewer):
        await peer.close()
    for sock in (studio, socket):
        await sock.close()


async def test_a_recording_a_crash_left_open_is_finished_from_its_file(
    owner: User, stream: Stream, recording_dirs: dict[str, Path]
) -> None:
    """The spool file as a killed process leaves it (copied while it is being written) is
    finalized at start: ``ready``, reason ``interrupted``, and it plays."""
    studio, publisher = await go_live(stream, owner)
    began = await studio.expect("recording")
    await asyncio.sleep(4)  # a couple of clusters written
    writing = next(recording_dirs["spool"].glob(f"{began['id']}.*"))
    left = await database_sync_to_async(recording_begin)(stream=stream)
    shutil.copy(writing, writing.with_name(f"{left.pk}{writing.suffix}"))

    async def running(recording: Recording) -> bool:
        status = await gateway.recording_status(stream_id=str(recording.stream_id))
        return status is not None and status.recording_id == str(recording.pk)

    repaired = await recordings_repair(before=timezone.now(), running=running)

    assert repaired == 1  # the one being written is left alone
    left = await database_sync_to_async(Recording.objects.get)(pk=left.pk)
    assert (left.state, left.stop_reason) == ("ready", "interrupted")
    assert left.duration > 1
    played = decoded(recording_dirs["storage"] / left.file.name)
    assert played["video"] == left.video_frames > 10
    assert played["first_matches"] is True
    assert (await gateway.recording_status(stream_id=str(stream.pk))) is not None
    await publisher.close()
    await studio.close()


async def test_turning_recording_off_and_on_during_a_broadcast(owner: User, stream: Stream) -> None:
    studio, publisher = await go_live(stream, owner)
    first = await studio.expect("recording")
    socket, viewer = await watch(stream)
    assert await viewer.wait_for_frames(video=10, within=20)
    api = APIClient()
    await database_sync_to_async(api.force_login)(owner)
    path = f"/api/v1/streams/{stream.slug}/"

    off = await database_sync_to_async(api.patch)(path, {"record": False}, format="json")
    assert off.json()["record"] is False
    stopped = await studio.expect("recording")
    assert (stopped["id"], stopped["state"], stopped["reason"]) == (first["id"], "ready", "stopped")
    before = viewer.video.frames
    assert await wait_until(lambda: viewer.video.frames > before + 30, 20)

    await database_sync_to_async(api.patch)(path, {"record": True}, format="json")
    again = await studio.expect("recording")
    assert again["state"] == "recording"
    assert again["id"] != first["id"]

    async def written() -> int:
        status = await gateway.recording_status(stream_id=str(stream.pk))
        return status.bytes if status is not None else 0

    deadline = asyncio.get_running_loop().time() + 20
    while await written() < 20_000:  # from the next keyframe on
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    await studio.send({"type": "end"})
    while (last := await studio.expect("recording"))["id"] != again["id"]:
        pass
    assert (last["state"], last["reason"]) == ("ready", "ended")
    assert {r.state for r in await rows(stream)} == {"ready"}
    for peer in (publisher, viewer):
        await peer.close()
    for sock in (studio, socket):
        await sock.close()


async def test_a_server_stopping_keeps_its_recordings_as_interrupted(
    stream: Stream, recording_dirs: dict[str, Path]
) -> None:
    """SIGTERM: the broadcast stays live for its publisher to come back, and the recording
    so far is finished as ``interrupted``, not as the broadcast's end."""
    local = EmbeddedGateway()
    publisher = TestPublisher()
    stream_id = str(stream.pk)
    published = await local.publish(stream_id=stream_id, offer_sdp=await publisher.create_offer())
    await publisher.accept_answer(published.answer_sdp)
    recording = await database_sync_to_async(recording_begin)(stream=stream)
    await local.recording_start(stream_id=stream_id, recording_id=str(recording.pk))

    async def written() -> bool:
        status = await local.recording_status(stream_id=stream_id)
        return status is not None and status.bytes > 20_000

    assert await wait_until_awaited(written, 20)
    await local.stopping()
    await local.close_all()

    await database_sync_to_async(recording.refresh_from_db)()
    assert (recording.state, recording.stop_reason) == ("ready", "interrupted")
    assert "restart" in recording.detail
    assert decoded(recording_dirs["storage"] / recording.file.name)["video"] > 0
    await publisher.close()


async def test_an_h264_whip_broadcast_is_recorded_into_an_mp4_that_plays(
    owner: User, recording_dirs: dict[str, Path]
) -> None:
    """As OBS or FFmpeg publish: H.264 + Opus over WHIP, ended by the client's DELETE."""
    stream, key = await database_sync_to_async(stream_create)(owner=owner, title="Encoder")
    client = WhipClient(AsyncClient(), stream.slug, key.secret, codec="h264")
    assert (await client.publish()).status_code == 201
    viewer = TestViewer()
    watched = await gateway.subscribe(
        stream_id=str(stream.pk), offer_sdp=await viewer.create_offer()
    )
    await viewer.accept_answer(watched.sdp)
    assert await viewer.wait_for_frames(video=45, within=30)

    assert (await client.delete()).status_code == 200
    recording = await finished(stream)
    assert (recording.state, recording.stop_reason) == ("ready", "ended")
    assert (recording.container, recording.video_codec, recording.audio_codec) == (
        "mp4",
        "h264",
        "opus",
    )
    assert recording.file.name.endswith(".mp4")
    played = decoded(recording_dirs["storage"] / recording.file.name)
    assert played["video"] == recording.video_frames > 0
    assert played["first_matches"] is True
    assert played["audio"] > 0
    await client.close()
    await viewer.close()
    await gateway.close_all()


async def test_recording_turned_on_with_no_media_server_holding_the_broadcast(
    owner: User, stream: Stream
) -> None:
    """Live in the database, no router (its publisher not back since a restart): nothing
    is recorded yet, and no failed recording is left; its next publish records it."""
    await database_sync_to_async(stream_go_live)(stream=stream)
    api = APIClient()
    await database_sync_to_async(api.force_login)(owner)
    path = f"/api/v1/streams/{stream.slug}/"

    await database_sync_to_async(api.patch)(path, {"record": False}, format="json")
    await database_sync_to_async(api.patch)(path, {"record": True}, format="json")

    assert await rows(stream) == []
    studio, publisher = await go_live(stream, owner)
    assert (await studio.expect("recording"))["state"] == "recording"
    await publisher.close()
    await studio.close()
