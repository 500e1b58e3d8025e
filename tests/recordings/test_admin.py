from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from recordings.models import Recording
from tests.recordings.conftest import RecordingFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/recordings/recording/"


@pytest.fixture
def admin_client(superuser: User) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


def test_changelist_links_the_stream_and_the_file_and_filters_by_state(
    admin_client: Client, make_stream: Callable, make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream(title="Morning show")
    ready = make_recording(stream)
    make_recording(stream, state=Recording.State.FAILED)

    html = admin_client.get(CHANGELIST).content.decode()
    assert f"/admin/broadcast/stream/{stream.pk}/change/" in html
    assert f"/api/v1/recordings/{ready.pk}/download/" in html
    assert f'href="/recordings/{ready.pk}/"' in html  # its replay page
    assert "0:01:02" in html  # 61.5 s
    assert "640x480" in html

    failed_only = admin_client.get(CHANGELIST, {"state__exact": "failed"}).content.decode()
    assert f"/api/v1/recordings/{ready.pk}/download/" not in failed_only
    assert "Failed" in failed_only
    by_stream = admin_client.get(CHANGELIST, {"stream__id__exact": stream.pk})
    assert by_stream.status_code == 200
    assert by_stream.context["cl"].result_count == 2


def test_the_delete_action_removes_the_files(
    admin_client: Client,
    make_stream: Callable,
    make_recording: RecordingFactory,
    recording_dirs: dict[str, Path],
    django_capture_on_commit_callbacks: Callable,
) -> None:
    stream, _ = make_stream()
    recordings = [make_recording(stream) for _ in range(2)]
    files = [recording_dirs["storage"] / r.file.name for r in recordings]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANGELIST,
            {"action": "delete_with_files", "_selected_action": [str(r.pk) for r in recordings]},
            follow=True,
        )

    assert "Deleted 2 recording(s) and their files." in response.content.decode()
    assert not Recording.objects.exists()
    assert not any(path.exists() for path in files)


def test_publish_actions(
    admin_client: Client, make_stream: Callable, make_recording: RecordingFactory
) -> None:
    stream, _ = make_stream()
    recording = make_recording(stream)

    admin_client.post(CHANGELIST, {"action": "unpublish", "_selected_action": [str(recording.pk)]})

    recording.refresh_from_db()
    assert recording.published is False
