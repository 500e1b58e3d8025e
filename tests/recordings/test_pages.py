"""The replay page, the owner's publish and delete, "Past broadcasts" on the watch page and
the studio, and the recording column of My streams."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from broadcast.models import Stream
from broadcast.services import stream_go_live
from recordings.models import Recording
from tests.recordings.conftest import RecordingFactory

pytestmark = pytest.mark.django_db


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


def _page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_replay_page_plays_the_file(
    client: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream(title="Morning show", visibility=Stream.Visibility.PUBLIC)
    recording = make_recording(stream)

    html = _page(client, f"/recordings/{recording.pk}/")

    assert f'src="/recordings/{recording.pk}/file"' in html
    assert '<video id="replay" controls' in html
    assert "Morning show" in html
    assert "1:01" in html  # its duration
    assert "poster=" not in html  # no thumbnail
    # a viewer sees no owner's controls
    assert "Unpublish" not in html
    assert "Delete" not in html


def test_the_poster_is_the_thumbnail(
    client: Client,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PUBLIC)
    recording = make_recording(stream)
    (recording_dirs["storage"] / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    recording.thumbnail.name = "thumb.jpg"
    recording.save(update_fields=["thumbnail"])

    html = _page(client, f"/recordings/{recording.pk}/")
    poster = client.get(f"/recordings/{recording.pk}/poster.jpg")

    assert f'poster="/recordings/{recording.pk}/poster.jpg"' in html
    assert poster.status_code == 200
    assert poster["Content-Type"] == "image/jpeg"
    assert poster["Content-Length"] == str(len(b"\xff\xd8\xff\xe0 a jpeg"))


def test_owner_publishes_unpublishes_and_deletes(
    django_capture_on_commit_callbacks: Callable[..., Any],
    owner: Client,
    stranger: Client,
    make_stream: Callable[..., Any],
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PUBLIC)
    recording = make_recording(stream, published=False)
    page = f"/recordings/{recording.pk}/"

    html = _page(owner, page)
    assert "unpublished: only you and staff can watch it" in html
    assert re.search(r'data-confirm="Publish this recording\?', html)
    assert stranger.get(page).status_code == 404

    owner.post(f"{page}publish/", {"published": "1"})
    assert stranger.get(page).status_code == 200
    assert "Unpublish" in _page(owner, page)

    # only the owner (or staff) may change it; to anyone else it does not exist
    assert stranger.post(f"{page}publish/", {"published": "0"}).status_code == 404
    assert stranger.post(f"{page}delete/").status_code == 404
    owner.post(f"{page}publish/", {"published": "0"})
    assert stranger.get(page).status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post(f"{page}delete/")
    assert response.status_code == 302
    assert response["Location"] == f"/watch/{stream.slug}/"
    assert not Recording.objects.filter(pk=recording.pk).exists()
    assert list(recording_dirs["storage"].iterdir()) == []
    assert owner.get(page).status_code == 404


def test_a_recording_still_running_or_failed(
    owner: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    running = make_recording(stream, state=Recording.State.RECORDING)
    failed = make_recording(
        stream,
        state=Recording.State.FAILED,
        stop_reason=Recording.StopReason.DISK_FULL,
        detail="12 MB free.",
    )

    assert "still being recorded" in _page(owner, f"/recordings/{running.pk}/")
    refused = owner.post(f"/recordings/{running.pk}/delete/", follow=True)
    assert "delete it once it has finished" in refused.content.decode()
    assert Recording.objects.filter(pk=running.pk).exists()
    html = _page(owner, f"/recordings/{failed.pk}/")
    assert "This recording failed: the server&#x27;s disk was nearly full. 12 MB free." in html
    assert "<video" not in html


def test_watch_page_lists_past_broadcasts_when_not_live(
    client: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PUBLIC)
    now = timezone.now()
    older = make_recording(stream, started_at=now - timedelta(days=2))
    newer = make_recording(stream, started_at=now - timedelta(days=1))
    unpublished = make_recording(stream, published=False)
    running = make_recording(stream, state=Recording.State.RECORDING)

    html = _page(client, f"/watch/{stream.slug}/")

    section = html.split('id="past-broadcasts"')[1]
    assert " hidden>" not in section.split("\n")[0]
    assert section.index(str(newer.pk)) < section.index(str(older.pk))  # newest first
    for absent in (unpublished, running):
        assert str(absent.pk) not in html
    # the same list, alone, for the page to reload when a recording becomes ready
    fragment = _page(client, f"/watch/{stream.slug}/past/")
    assert fragment.index(str(newer.pk)) < fragment.index(str(older.pk))
    assert str(unpublished.pk) not in fragment


def test_watch_page_hides_past_broadcasts_while_live(
    client: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PUBLIC)
    make_recording(stream)
    stream_go_live(stream=stream)

    html = _page(client, f"/watch/{stream.slug}/")

    assert re.search(r'<section id="past-broadcasts"[^>]*\shidden>', html)


def test_past_broadcasts_of_a_private_stream_are_not_found(
    stranger: Client, make_stream: Callable[..., Any]
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PRIVATE)

    assert stranger.get(f"/watch/{stream.slug}/past/").status_code == 404


def test_studio_shows_the_recording_running_and_every_past_one(
    owner: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    unpublished = make_recording(stream, published=False, started_at=timezone.now())
    running = make_recording(stream, state=Recording.State.RECORDING)

    html = _page(owner, f"/studio/{stream.slug}/")

    config = json.loads(
        html.split('id="onair-recording" type="application/json">')[1].split("<")[0]
    )
    assert config["active"] == {"id": str(running.pk), "started_at": running.started_at.isoformat()}
    assert config["record"] is True
    assert config["stop_reasons"]["disk_full"] == "The server's disk was nearly full"
    assert str(unpublished.pk) in html  # the owner's own list has them all
    assert 'id="rec-indicator"' in html


def test_my_streams_shows_the_record_switch_and_the_state(
    owner: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    recording_now, _ = make_stream(title="Recording now")
    make_recording(recording_now, state=Recording.State.RECORDING)
    off, _ = make_stream(title="Not recorded", record=False)
    failed, _ = make_stream(title="Failed once")
    make_recording(
        failed, state=Recording.State.FAILED, stop_reason=Recording.StopReason.SIZE_LIMIT
    )

    html = _page(owner, "/streams/")

    def row(slug: str) -> str:
        return html.split(f'data-slug="{slug}"')[1].split("</tr>")[0]

    assert 'role="switch"' in row(recording_now.slug)
    assert " checked>" in row(recording_now.slug)
    assert "● Recording" in row(recording_now.slug).replace(
        '<span aria-hidden="true">●</span> ', "● "
    )
    assert " checked>" not in row(off.slug)
    assert "failed: it reached the size limit" in row(failed.slug)
    assert f'data-record-url="/api/v1/streams/{off.slug}/"' in row(off.slug)


def _studio_config(client: Client, stream: Stream) -> dict[str, Any]:
    html = _page(client, f"/studio/{stream.slug}/")
    script = html.split('id="onair-recording" type="application/json">')[1].split("<")[0]
    config: dict[str, Any] = json.loads(script)
    return config


def test_studio_says_why_this_broadcasts_recording_stopped_early(
    owner: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    stream.refresh_from_db()
    assert stream.started_at is not None
    earlier = stream.started_at - timedelta(hours=1)
    make_recording(stream, started_at=earlier, stop_reason=Recording.StopReason.SIZE_LIMIT)
    assert _studio_config(owner, stream)["stopped"] is None  # a past broadcast's

    make_recording(
        stream,
        started_at=stream.started_at,
        stop_reason=Recording.StopReason.DISK_FULL,
        detail="900 MB free.",
    )
    assert _studio_config(owner, stream)["stopped"] == {
        "state": "ready",
        "reason": "disk_full",
        "detail": "900 MB free.",
    }

    make_recording(stream, started_at=timezone.now(), stop_reason=Recording.StopReason.STOPPED)
    assert _studio_config(owner, stream)["stopped"] is None  # turned off by the owner


def test_a_key_holders_studio_learns_the_recording_only_from_the_signaling(
    stranger: Client, make_stream: Callable[..., Any], make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PUBLIC)
    stream_go_live(stream=stream)
    make_recording(stream, state=Recording.State.RECORDING)

    config = _studio_config(stranger, stream)

    assert config["active"] is None
    assert config["record"] is None
    assert config["stopped"] is None
