"""The recordings API: list per stream, retrieve, download, delete, publish and unpublish;
who may do what; a stranger cannot tell a recording they may not see from a missing one;
and the stream's ``record`` switch in the streams API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.test import APIClient

from broadcast.models import Stream
from broadcast.services import stream_update
from recordings.models import Recording
from tests.broadcast.test_apis import API, ClientFor, assert_error
from tests.recordings.conftest import CONTENT, RecordingFactory

pytestmark = pytest.mark.django_db

MISSING = "00000000-0000-0000-0000-000000000000"


def _url(recording: Recording | str, action: str = "") -> str:
    key = recording.pk if isinstance(recording, Recording) else recording
    return f"{API}/recordings/{key}/{action + '/' if action else ''}"


def test_the_owner_lists_every_recording_of_a_stream_newest_first(
    client_for: ClientFor, user: User, make_stream: Callable, make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    ready = make_recording(stream)
    running = make_recording(stream, state=Recording.State.RECORDING)

    body = client_for(user).get(f"{API}/streams/{stream.slug}/recordings/").json()

    assert body["count"] == 2
    assert [item["id"] for item in body["results"]] == [str(running.pk), str(ready.pk)]
    item = body["results"][1]
    assert item["stream"] == stream.slug
    assert item["state"] == "ready"
    assert (item["duration"], item["size"], item["container"]) == (61.5, len(CONTENT), "webm")
    assert (item["video_codec"], item["audio_codec"], item["width"], item["height"]) == (
        "vp8",
        "opus",
        640,
        480,
    )
    assert item["download_url"] == _url(ready, "download")
    assert body["results"][0]["download_url"] is None
    assert not {"spool_path", "host", "worker", "file"} & set(item)


def test_anyone_lists_and_downloads_a_public_streams_published_recordings(
    api_client: APIClient, make_stream: Callable, make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    ready = make_recording(stream)
    make_recording(stream, published=False)
    make_recording(stream, state=Recording.State.FAILED)

    listed = api_client.get(f"{API}/streams/{stream.slug}/recordings/").json()
    assert [item["id"] for item in listed["results"]] == [str(ready.pk)]
    assert api_client.get(_url(ready)).json()["id"] == str(ready.pk)

    download = api_client.get(_url(ready, "download"))
    assert download.status_code == 200
    assert download["Content-Type"] == "video/webm"
    assert "attachment" in download["Content-Disposition"]
    assert f"{stream.slug}-" in download["Content-Disposition"]
    assert _streamed(download) == CONTENT
    # a broken download resumes where it stopped
    rest = api_client.get(_url(ready, "download"), headers={"Range": "bytes=10-"})
    assert rest.status_code == 206
    assert rest["Content-Range"] == f"bytes 10-{len(CONTENT) - 1}/{len(CONTENT)}"
    assert _streamed(rest) == CONTENT[10:]


def _streamed(response: Any) -> bytes:
    """A streamed body, read as the ASGI handler reads it."""

    async def read() -> bytes:
        return b"".join([part async for part in response])

    return async_to_sync(read)()


@pytest.mark.parametrize("action", ["", "download"])
def test_a_stranger_cannot_tell_a_private_streams_recording_from_a_missing_one(
    client_for: ClientFor,
    other_user: User,
    make_stream: Callable,
    make_recording: RecordingFactory,
    action: str,
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream)
    stream_update(stream=stream, visibility=Stream.Visibility.PRIVATE)
    client = client_for(other_user)

    hidden = assert_error(client.get(_url(recording, action)), 404, "not_found")
    missing = assert_error(client.get(_url(MISSING, action)), 404, "not_found")
    assert hidden == missing
    listed = assert_error(client.get(f"{API}/streams/{stream.slug}/recordings/"), 404, "not_found")
    nowhere = assert_error(client.get(f"{API}/streams/nowhere/recordings/"), 404, "not_found")
    assert listed == nowhere


@pytest.mark.parametrize(
    ("method", "action"), [("delete", ""), ("post", "publish"), ("post", "unpublish")]
)
def test_changes_need_a_login_and_the_owner(
    api_client: APIClient,
    client_for: ClientFor,
    other_user: User,
    make_stream: Callable,
    make_recording: RecordingFactory,
    method: str,
    action: str,
) -> None:
    stream, _ = make_stream()
    public = make_recording(stream)
    private = make_recording(stream, published=False)

    assert_error(getattr(api_client, method)(_url(public, action)), 401, "not_authenticated")
    stranger = client_for(other_user)
    assert_error(getattr(stranger, method)(_url(public, action)), 403, "permission_denied")
    assert_error(getattr(stranger, method)(_url(private, action)), 404, "not_found")
    assert Recording.objects.filter(published=True).get() == public


def test_the_owner_publishes_unpublishes_and_deletes(
    client_for: ClientFor,
    user: User,
    other_user: User,
    make_stream: Callable,
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream)
    owner, stranger = client_for(user), client_for(other_user)

    assert owner.post(_url(recording, "unpublish")).json()["published"] is False
    assert_error(stranger.get(_url(recording)), 404, "not_found")
    assert owner.post(_url(recording, "publish")).json()["published"] is True
    assert stranger.get(_url(recording)).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.delete(_url(recording))
    assert response.status_code == 204
    assert not Recording.objects.exists()
    assert not (recording_dirs["storage"] / recording.file.name).exists()
    assert_error(owner.get(_url(recording)), 404, "not_found")


def test_staff_manage_anyones_recordings(
    client_for: ClientFor,
    staff_user: User,
    make_stream: Callable,
    make_recording: RecordingFactory,
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PRIVATE)
    recording = make_recording(stream)
    staff = client_for(staff_user)

    assert staff.get(f"{API}/streams/{stream.slug}/recordings/").json()["count"] == 1
    assert staff.get(_url(recording, "download")).status_code == 200
    assert staff.delete(_url(recording)).status_code == 204


def test_a_recording_not_ready_has_nothing_to_download_nor_delete(
    client_for: ClientFor, user: User, make_stream: Callable, make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    running = make_recording(stream, state=Recording.State.RECORDING)
    failed = make_recording(stream, state=Recording.State.FAILED)
    owner = client_for(user)

    assert_error(owner.get(_url(running, "download")), 409, "not_ready")
    assert_error(owner.get(_url(failed, "download")), 409, "not_ready")
    assert_error(owner.delete(_url(running)), 409, "recording_running")
    assert owner.delete(_url(failed)).status_code == 204


def test_a_file_missing_from_storage_is_a_clear_404(
    client_for: ClientFor,
    user: User,
    make_stream: Callable,
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream)
    (recording_dirs["storage"] / recording.file.name).unlink()

    assert_error(client_for(user).get(_url(recording, "download")), 404, "file_missing")


def test_a_malformed_recording_id_is_not_found(client_for: ClientFor, user: User) -> None:
    assert client_for(user).get(f"{API}/recordings/not-a-uuid/").status_code == 404


def test_the_streams_api_reads_and_sets_record(
    client_for: ClientFor, user: User, make_stream: Callable
) -> None:
    client = client_for(user)

    created = client.post(f"{API}/streams/", {"title": "Quiet", "record": False}, format="json")
    assert created.status_code == 201
    assert created.json()["record"] is False
    default = client.post(f"{API}/streams/", {"title": "Kept"}, format="json").json()
    assert default["record"] is True

    slug = created.json()["slug"]
    changed = client.patch(f"{API}/streams/{slug}/", {"record": True}, format="json")
    assert changed.json()["record"] is True
    assert Stream.objects.get(slug=slug).record is True
    bad = client.patch(f"{API}/streams/{slug}/", {"record": "sometimes"}, format="json")
    assert_error(bad, 400, "invalid")


def test_the_schema_has_the_recordings_api_and_no_warnings(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema))
    text = schema.read_text()
    assert "/api/v1/streams/{slug}/recordings/:" in text
    assert "/api/v1/recordings/{recording_id}/download/:" in text
    assert "RecordingStateEnum" in text
