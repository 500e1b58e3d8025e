"""A recording's thumbnail: the poster its stream had when it ended, if taken while it
recorded (``recordings.thumbnails``); for a broadcast through the in-process SFU, a JPEG of
its video."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import av
import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from broadcast.models import Stream
from broadcast.services import stream_create, stream_go_live, stream_poster_set
from recordings.models import Recording
from recordings.services import recording_begin, recording_finish, recording_store
from recordings.storage import recording_storage
from signaling.gateway import gateway
from tests.recordings.conftest import file_info, spool_file
from tests.signaling.test_consumers import go_live

pytestmark = pytest.mark.django_db

JPEG = b"\xff\xd8\xff\xe0first poster\xff\xd9"
LAST_JPEG = b"\xff\xd8\xff\xe0last poster\xff\xd9"

Capture = Callable[..., object]


@pytest.fixture(autouse=True)
def thumbnails(tmp_path: Path, settings: Settings) -> None:
    settings.STORAGES = {
        **django_settings.STORAGES,
        "thumbnails": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "thumbnails"},
        },
    }


@pytest.fixture
def live(make_stream: Callable[..., tuple[Stream, object]]) -> Stream:
    stream, _ = make_stream()
    return stream_go_live(stream=stream)


def _record(
    stream: Stream, capture: Capture, *, posters: tuple[bytes, ...] = (), ready: bool = True
) -> Recording:
    """A recording of ``stream`` during which ``posters`` were taken, finished as the
    gateway finishes one (ready with its file, or failed)."""
    recording = recording_begin(stream=stream)
    for jpeg in posters:
        stream_poster_set(stream_id=stream.pk, jpeg=jpeg)
    with capture(execute=True):  # type: ignore[attr-defined]
        if ready:
            name = recording_store(recording_id=str(recording.pk), spool_path=spool_file(recording))
            recording_finish(
                recording_id=recording.pk, reason="ended", file=file_info(), file_name=name
            )
        else:
            recording_finish(recording_id=recording.pk, reason="failed", detail="Broken.")
    recording.refresh_from_db()
    return recording


def test_a_ready_recording_gets_the_last_poster_taken_while_it_recorded(
    live: Stream, django_capture_on_commit_callbacks: Capture
) -> None:
    recording = _record(live, django_capture_on_commit_callbacks, posters=(JPEG, LAST_JPEG))

    assert recording.thumbnail.name == f"{recording.pk}.jpg"
    with recording_storage().open(recording.thumbnail.name, "rb") as thumbnail:
        assert thumbnail.read() == LAST_JPEG


def test_a_poster_from_before_the_recording_is_not_its_thumbnail(
    live: Stream, django_capture_on_commit_callbacks: Capture
) -> None:
    stream_poster_set(stream_id=live.pk, jpeg=JPEG)
    Stream.objects.filter(pk=live.pk).update(
        poster_taken_at=live.started_at - timedelta(minutes=5)  # type: ignore[operator]
    )
    recording = _record(live, django_capture_on_commit_callbacks)
    assert recording.thumbnail.name == ""


def test_without_a_poster_or_a_file_there_is_no_thumbnail(
    live: Stream, django_capture_on_commit_callbacks: Capture
) -> None:
    assert _record(live, django_capture_on_commit_callbacks).thumbnail.name == ""
    failed = _record(live, django_capture_on_commit_callbacks, posters=(JPEG,), ready=False)
    assert failed.state == Recording.State.FAILED
    assert failed.thumbnail.name == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_a_recorded_broadcast_s_thumbnail_is_a_picture_of_its_video(
    settings: Settings,
) -> None:
    settings.ONAIR = {**settings.ONAIR, "THUMBNAIL_SECONDS": 0.3}
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")
    stream, _ = await database_sync_to_async(stream_create)(owner=owner, title="Recorded")
    studio, publisher = await go_live(stream, owner)
    try:
        assert (await studio.expect("recording"))["state"] == "recording"
        await _until(lambda: _poster_of(stream))
        await studio.send({"type": "end"})
        done = await studio.expect("recording")
        assert done["state"] == "ready"
        recording = await _until(lambda: _with_thumbnail(stream))
        assert isinstance(recording, Recording)
    finally:
        await publisher.close()
        await studio.close()
        await gateway.close_all()

    def thumbnail() -> bytes:
        with recording_storage().open(recording.thumbnail.name, "rb") as file:
            return bytes(file.read())

    jpeg = await database_sync_to_async(thumbnail)()
    decoder = av.CodecContext.create("mjpeg", "r")
    (picture,) = [*decoder.decode(av.Packet(jpeg)), *decoder.decode(None)]
    assert (picture.width, picture.height) == (320, 240)


def _poster_of(stream: Stream) -> str:
    stream.refresh_from_db()
    return stream.poster


def _with_thumbnail(stream: Stream) -> Recording | None:
    return Recording.objects.exclude(thumbnail="").filter(stream=stream).first()


async def _until(check: Callable[[], object], within: float = 20) -> object:
    """``check()`` (a database read) once it is truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while not (found := await database_sync_to_async(check)()):
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.1)
    return found
