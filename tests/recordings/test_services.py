"""Recordings' services and selectors: a recording's life, who sees what, deletion with the
files, retention, and the stream's ``record`` switch."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from pytest_django.fixtures import Settings

from broadcast.models import Stream
from broadcast.services import stream_end, stream_go_live, stream_update
from onair.exceptions import ConflictError, NotFoundError, PermissionDeniedError
from recordings.models import Recording
from recordings.selectors import (
    recording_active,
    recording_get,
    recording_list,
    recording_list_unfinished,
    recording_may_start,
)
from recordings.services import (
    recording_assigned,
    recording_begin,
    recording_delete,
    recording_finish,
    recording_set_published,
    recording_started,
    recording_store,
    recordings_expire,
)
from recordings.signals import recording_state_changed
from recordings.storage import recording_storage
from tests.recordings.conftest import CONTENT, RecordingFactory, file_info, spool_file

pytestmark = pytest.mark.django_db


# --- a recording's life ---------------------------------------------------------------


def test_a_recording_begins_recording_and_published_if_its_stream_is_public(
    make_stream: Callable,
) -> None:
    public, _ = make_stream()
    private, _ = make_stream(visibility=Stream.Visibility.PRIVATE)
    heard: list[str] = []

    def listen(recording: Recording, **kwargs: object) -> None:
        heard.append(recording.state)

    recording_state_changed.connect(listen)
    try:
        on_public = recording_begin(stream=public)
        on_private = recording_begin(stream=private)
    finally:
        recording_state_changed.disconnect(listen)

    assert on_public.state == Recording.State.RECORDING
    assert on_public.started_at is not None
    assert on_public.published is True
    assert on_private.published is False
    assert recording_active(stream=public) == on_public
    assert heard == ["recording", "recording"]


def test_a_finished_file_moves_into_storage_and_the_row_is_ready(
    make_stream: Callable, recording_dirs: dict[str, Path]
) -> None:
    stream, _ = make_stream()
    recording = recording_begin(stream=stream)
    spooled = spool_file(recording)
    recording_assigned(recording_id=str(recording.pk), host="here", worker="")
    recording_started(recording_id=str(recording.pk), spool_path=str(spooled), container="webm")

    name = recording_store(recording_id=str(recording.pk), spool_path=spooled)
    finished = recording_finish(
        recording_id=recording.pk, reason="ended", file=file_info(), file_name=name
    )

    assert finished is not None
    finished.refresh_from_db()
    assert finished.state == Recording.State.READY
    assert finished.stop_reason == Recording.StopReason.ENDED
    assert (finished.duration, finished.size, finished.video_frames) == (61.5, len(CONTENT), 1845)
    assert (finished.video_codec, finished.audio_codec) == ("vp8", "opus")
    assert (finished.width, finished.height, finished.container) == (640, 480, "webm")
    assert finished.ended_at is not None
    assert finished.spool_path == ""
    assert not spooled.exists()
    assert (recording_dirs["storage"] / name).read_bytes() == CONTENT
    with finished.file.open("rb") as handle:
        assert handle.read() == CONTENT
    assert recording_active(stream=stream) is None


def test_a_recording_without_a_playable_file_fails_with_its_reason(make_stream: Callable) -> None:
    stream, _ = make_stream()
    recording = recording_begin(stream=stream)

    finished = recording_finish(
        recording_id=recording.pk, reason="disk_full", detail="Less than 1 GB free."
    )

    assert finished is not None
    assert finished.state == Recording.State.FAILED
    assert finished.stop_reason == Recording.StopReason.DISK_FULL
    assert finished.detail == "Less than 1 GB free."


def test_an_unknown_stop_reason_is_a_failure_that_names_it(make_stream: Callable) -> None:
    stream, _ = make_stream()
    recording = recording_begin(stream=stream)

    finished = recording_finish(recording_id=recording.pk, reason="martians")

    assert finished is not None
    assert finished.stop_reason == Recording.StopReason.FAILED
    assert "martians" in finished.detail


def test_a_recording_finishes_once(make_stream: Callable) -> None:
    stream, _ = make_stream()
    recording = recording_begin(stream=stream)
    recording_finish(recording_id=recording.pk, reason="ended", detail="first")

    assert recording_finish(recording_id=recording.pk, reason="failed", detail="second") is None
    recording.refresh_from_db()
    assert recording.detail == "first"


def test_unfinished_recordings_are_found_by_the_machine_writing_them(make_stream: Callable) -> None:
    stream, _ = make_stream()
    mine = recording_begin(stream=stream)
    theirs = recording_begin(stream=stream)
    for recording, host, worker in ((mine, "a", "w1"), (theirs, "b", "w2")):
        recording_assigned(recording_id=str(recording.pk), host=host, worker=worker)

    assert set(recording_list_unfinished()) == {mine, theirs}
    assert list(recording_list_unfinished(host="a")) == [mine]


def test_a_reconnecting_publisher_does_not_undo_a_deliberate_stop(make_stream: Callable) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    first = recording_begin(stream=stream)
    recording_finish(recording_id=first.pk, reason="interrupted")
    assert recording_may_start(stream=stream)  # a crash: record again

    second = recording_begin(stream=stream)
    recording_finish(recording_id=second.pk, reason="size_limit")
    assert not recording_may_start(stream=stream)

    stream_end(stream=stream, reason=Stream.EndReason.API)
    stream_go_live(stream=stream)  # a new broadcast records again
    assert recording_may_start(stream=stream)
    stream_update(stream=stream, record=False)
    assert not recording_may_start(stream=stream)


# --- who sees what ------------------------------------------------------------------


def test_owner_and_staff_see_every_recording_others_only_published_ready_public_ones(
    make_stream: Callable,
    make_recording: RecordingFactory,
    user: User,
    other_user: User,
    staff_user: User,
) -> None:
    stream, _ = make_stream()
    ready = make_recording(stream)
    unpublished = make_recording(stream, published=False)
    failed = make_recording(stream, state=Recording.State.FAILED)
    running = make_recording(stream, state=Recording.State.RECORDING)

    every = {ready, unpublished, failed, running}
    assert set(recording_list(stream=stream, user=user)) == every
    assert set(recording_list(stream=stream, user=staff_user)) == every
    assert list(recording_list(stream=stream, user=other_user)) == [ready]
    assert list(recording_list(stream=stream, user=AnonymousUser())) == [ready]
    assert recording_get(recording_id=str(ready.pk), user=AnonymousUser()) == ready
    for hidden in (unpublished, failed, running):
        assert recording_get(recording_id=str(hidden.pk), user=user) == hidden
        with pytest.raises(NotFoundError):
            recording_get(recording_id=str(hidden.pk), user=other_user)


@pytest.mark.parametrize("visibility", [Stream.Visibility.PRIVATE, Stream.Visibility.UNLISTED])
def test_a_stream_that_is_not_public_shows_no_recording_to_others(
    make_stream: Callable,
    make_recording: RecordingFactory,
    other_user: User,
    visibility: str,
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream)
    stream_update(stream=stream, visibility=visibility)

    assert list(recording_list(stream=stream, user=other_user)) == []
    with pytest.raises(NotFoundError) as refused:
        recording_get(recording_id=str(recording.pk), user=other_user)
    with pytest.raises(NotFoundError) as missing:
        recording_get(recording_id="00000000-0000-0000-0000-000000000000", user=other_user)
    assert refused.value.message == missing.value.message


def test_a_malformed_id_is_not_found(user: User) -> None:
    with pytest.raises(NotFoundError):
        recording_get(recording_id="not-a-uuid", user=user)


# --- publishing and deleting ----------------------------------------------------------


def test_only_the_owner_or_staff_publish_and_delete(
    make_stream: Callable,
    make_recording: RecordingFactory,
    other_user: User,
    staff_user: User,
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream)

    with pytest.raises(PermissionDeniedError):
        recording_set_published(recording=recording, user=other_user, published=False)
    with pytest.raises(PermissionDeniedError):
        recording_delete(recording=recording, user=other_user)

    recording_set_published(recording=recording, user=staff_user, published=False)
    recording.refresh_from_db()
    assert recording.published is False


def test_deleting_a_recording_removes_its_file(
    make_stream: Callable,
    make_recording: RecordingFactory,
    user: User,
    recording_dirs: dict[str, Path],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream)
    stored = recording_dirs["storage"] / recording.file.name
    assert stored.exists()

    with django_capture_on_commit_callbacks(execute=True):
        recording_delete(recording=recording, user=user)

    assert not Recording.objects.exists()
    assert not stored.exists()


def test_a_recording_being_written_is_not_deleted(
    make_stream: Callable, make_recording: RecordingFactory, user: User
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream, state=Recording.State.RECORDING)

    with pytest.raises(ConflictError) as refused:
        recording_delete(recording=recording, user=user)

    assert refused.value.code == "recording_running"
    assert Recording.objects.filter(pk=recording.pk).exists()


def test_deleting_a_stream_removes_its_recordings_files(
    make_stream: Callable,
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    stream, _ = make_stream()
    stored = [recording_dirs["storage"] / make_recording(stream).file.name for _ in range(2)]

    with django_capture_on_commit_callbacks(execute=True):
        stream.delete()

    assert not Recording.objects.exists()
    assert not any(path.exists() for path in stored)


# --- retention ------------------------------------------------------------------------


def test_retention_deletes_finished_recordings_older_than_the_setting(
    make_stream: Callable,
    make_recording: RecordingFactory,
    settings: Settings,
    recording_dirs: dict[str, Path],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    stream, _ = make_stream()
    now = timezone.now()
    old = make_recording(stream, started_at=now - timedelta(days=31))
    recent = make_recording(stream, started_at=now - timedelta(days=29))
    old_running = make_recording(
        stream, state=Recording.State.RECORDING, started_at=now - timedelta(days=40)
    )

    assert recordings_expire() == 0  # the default keeps everything
    settings.ONAIR = {**settings.ONAIR, "RECORDING_RETENTION_DAYS": 30}
    with django_capture_on_commit_callbacks(execute=True):
        assert recordings_expire() == 1

    assert set(Recording.objects.all()) == {recent, old_running}
    assert not (recording_dirs["storage"] / old.file.name).exists()
    assert recording_storage().exists(recent.file.name)


def test_the_retention_command(
    make_stream: Callable,
    make_recording: RecordingFactory,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream, _ = make_stream()
    make_recording(stream, started_at=timezone.now() - timedelta(days=3))

    call_command("recordings_expire")
    assert "kept" in capsys.readouterr().out
    with override_settings(ONAIR={**settings.ONAIR, "RECORDING_RETENTION_DAYS": 2}):
        call_command("recordings_expire")
    assert "Deleted 1 recording(s) older than 2 days." in capsys.readouterr().out
    assert not Recording.objects.exists()


# --- the stream's switch --------------------------------------------------------------


def test_a_new_stream_records_by_default_as_the_setting_says(
    make_stream: Callable, settings: Settings
) -> None:
    assert make_stream()[0].record is True
    assert make_stream(record=False)[0].record is False
    settings.ONAIR = {**settings.ONAIR, "RECORD_BY_DEFAULT": False}
    assert make_stream()[0].record is False
