"""/recordings/<id>/file: the recording's video with HTTP range requests, for whoever may see
the recording; everyone else gets the 404 of a recording that does not exist."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client

from broadcast.models import Stream
from onair.ranged_response import CHUNK_BYTES
from recordings.models import Recording
from tests.recordings.conftest import RecordingFactory

pytestmark = pytest.mark.django_db

DATA = bytes(i * 13 % 256 for i in range(2 * CHUNK_BYTES + 1000))


def with_content(recording: Recording, data: bytes) -> Recording:
    """``recording``, its stored file now holding ``data``."""
    Path(recording.file.path).write_bytes(data)
    Recording.objects.filter(pk=recording.pk).update(size=len(data))
    recording.size = len(data)
    return recording


def _body(response: Any) -> bytes:
    """A streamed body, read as the ASGI handler reads it."""

    async def read() -> bytes:
        return b"".join([part async for part in response])

    return async_to_sync(read)()


def _url(recording: Recording | uuid.UUID | str) -> str:
    key = recording.pk if isinstance(recording, Recording) else recording
    return f"/recordings/{key}/file"


@pytest.fixture
def owner(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def stranger(other_user: User) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


def test_the_owner_gets_the_whole_file(
    owner: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    recording = with_content(make_recording(stream, published=False), DATA)

    response = owner.get(_url(recording))

    assert response.status_code == 200
    assert response["Content-Type"] == "video/webm"
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Length"] == str(len(DATA))
    assert response["ETag"].startswith(f'"{recording.pk.hex}-')
    assert "Last-Modified" in response
    assert "private" in response["Cache-Control"]
    assert _body(response) == DATA


@pytest.mark.parametrize(
    ("header", "status", "content_range", "body"),
    [
        ("bytes=0-99", 206, f"bytes 0-99/{len(DATA)}", DATA[:100]),
        ("bytes=1000-", 206, f"bytes 1000-{len(DATA) - 1}/{len(DATA)}", DATA[1000:]),
        ("bytes=-10", 206, f"bytes {len(DATA) - 10}-{len(DATA) - 1}/{len(DATA)}", DATA[-10:]),
        (f"bytes={len(DATA)}-", 416, f"bytes */{len(DATA)}", b""),
    ],
)
def test_ranges(
    owner: Client,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,
    header: str,
    status: int,
    content_range: str,
    body: bytes,
) -> None:
    stream, _ = make_stream()
    recording = with_content(make_recording(stream, container="mp4"), DATA)

    response = owner.get(_url(recording), headers={"Range": header})

    assert response.status_code == status
    assert response["Content-Range"] == content_range
    if status == 206:
        assert response["Content-Type"] == "video/mp4"
        assert _body(response) == body


def test_a_published_recording_of_a_public_stream_is_anyones(
    client: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PUBLIC)
    recording = with_content(make_recording(stream, published=True), DATA)

    response = client.get(_url(recording), headers={"Range": "bytes=10-19"})

    assert response.status_code == 206
    assert _body(response) == DATA[10:20]


def test_strangers_get_the_same_404_as_for_nothing(
    stranger: Client,
    client: Client,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,
) -> None:
    public, _ = make_stream(visibility=Stream.Visibility.PUBLIC)
    private, _ = make_stream(visibility=Stream.Visibility.PRIVATE)
    unlisted, _ = make_stream(visibility=Stream.Visibility.UNLISTED)
    hidden_urls = [
        _url(make_recording(public, published=False)),
        _url(make_recording(private, published=True)),
        _url(make_recording(unlisted, published=True)),
    ]
    missing = [_url(uuid.uuid4()), "/recordings/not-a-uuid/file"]

    for who in (stranger, client):
        answers = {_normalized(who.get(url)) for url in hidden_urls + missing}

        assert len(answers) == 1
        assert answers.pop()[0] == 404


def _normalized(response: Any) -> tuple[int, str]:
    """Status and page, less the logout form's CSRF token (masked anew for each page)."""
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", response.content.decode())
    return response.status_code, page


def test_staff_may_play_anything(
    staff_user: User, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PRIVATE)
    recording = with_content(make_recording(stream, published=False), DATA)
    staff = Client()
    staff.force_login(staff_user)

    assert staff.get(_url(recording), headers={"Range": "bytes=0-0"}).status_code == 206


def test_no_file_to_play_is_404(
    owner: Client,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
) -> None:
    stream, _ = make_stream()
    running = make_recording(stream, state=Recording.State.RECORDING)
    failed = make_recording(stream, state=Recording.State.FAILED)
    gone = make_recording(stream)
    (recording_dirs["storage"] / gone.file.name).unlink()

    for recording in (running, failed, gone):
        assert owner.get(_url(recording)).status_code == 404


def test_only_get_and_head(
    owner: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    recording = with_content(make_recording(stream), DATA)

    head = owner.head(_url(recording), headers={"Range": "bytes=0-9"})

    assert (head.status_code, head["Content-Length"], head.content) == (206, "10", b"")
    assert owner.post(_url(recording)).status_code == 405


class CountingStorage(FileSystemStorage):
    """The recordings' storage for the test below: counts what is read from its files."""

    reads: list[int] = []

    def open(self, name: str, mode: str = "rb") -> File[Any]:
        file = super().open(name, mode)
        assert file.file is not None
        raw: IO[Any] = file.file

        class Counting:
            def __getattr__(self, attr: str) -> Any:
                return getattr(raw, attr)

            def read(self, size: int = -1) -> bytes:
                data = raw.read(size)
                CountingStorage.reads.append(len(data))
                return data

        file.file = cast(IO[Any], Counting())
        return file


# The view runs in a thread of its own, whose SQLite connection would wait on the test's
# transaction.
@pytest.mark.django_db(transaction=True)
async def test_a_range_is_read_as_it_is_sent_not_the_whole_file(
    user: User,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
    settings: Any,
) -> None:
    stream, _ = await sync_to_async(make_stream)()
    recording = await sync_to_async(lambda: with_content(make_recording(stream), DATA))()
    settings.STORAGES = {
        **settings.STORAGES,
        "recordings": {
            "BACKEND": f"{__name__}.CountingStorage",
            "OPTIONS": {"location": recording_dirs["storage"]},
        },
    }
    CountingStorage.reads = []
    client = AsyncClient()
    await client.aforce_login(user)

    response = await client.get(_url(recording), headers={"Range": f"bytes={CHUNK_BYTES // 2}-"})
    assert isinstance(response, StreamingHttpResponse)
    sent = aiter(response)
    first = await anext(sent)

    assert response.status_code == 206
    assert first == DATA[CHUNK_BYTES // 2 : CHUNK_BYTES // 2 + CHUNK_BYTES]
    assert CountingStorage.reads == [CHUNK_BYTES]  # not the rest of the range, nor the file
    rest = b"".join([part async for part in sent])
    assert first + rest == DATA[CHUNK_BYTES // 2 :]
    assert sum(CountingStorage.reads) == len(DATA) - CHUNK_BYTES // 2
