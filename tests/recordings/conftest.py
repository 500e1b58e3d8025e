"""Recordings' fixtures: a storage and a spool directory of each test's own, and finished
recordings made through the services, as the gateway makes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from pytest_django.fixtures import Settings

from broadcast.models import Stream
from recordings.models import Recording
from recordings.services import (
    RecordingFile,
    recording_begin,
    recording_finish,
    recording_store,
)
from recordings.storage import spool_directory

CONTENT = b"\x1a\x45\xdf\xa3 not really a webm, but bytes to move around"


@pytest.fixture(autouse=True)
def recording_dirs(tmp_path: Path, settings: Settings) -> dict[str, Path]:
    """``storage``: where finished recordings go; ``spool``: where the SFU writes."""
    dirs = {"storage": tmp_path / "storage", "spool": tmp_path / "spool"}
    storages = {**django_settings.STORAGES}
    storages["recordings"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": dirs["storage"]},
    }
    settings.STORAGES = storages
    settings.ONAIR = {**settings.ONAIR, "RECORDING_SPOOL_DIR": str(dirs["spool"])}
    return dirs


def spool_file(recording: Recording, content: bytes = CONTENT, suffix: str = ".webm") -> Path:
    path = spool_directory() / f"{recording.pk}{suffix}"
    path.write_bytes(content)
    return path


def file_info(**overrides: Any) -> RecordingFile:
    values: dict[str, Any] = {
        "container": "webm",
        "duration": 61.5,
        "size": len(CONTENT),
        "video_codec": "vp8",
        "audio_codec": "opus",
        "width": 640,
        "height": 480,
        "video_frames": 1845,
    }
    return RecordingFile(**{**values, **overrides})


RecordingFactory = Callable[..., Recording]


@pytest.fixture
def make_recording() -> RecordingFactory:
    """A recording of ``stream`` as a broadcast leaves it: ``ready`` (its file stored),
    ``failed`` or still ``recording``."""

    def make(stream: Stream, *, state: str = Recording.State.READY, **fields: Any) -> Recording:
        recording = recording_begin(stream=stream)
        if state == Recording.State.READY:
            name = recording_store(recording_id=str(recording.pk), spool_path=spool_file(recording))
            recording_finish(
                recording_id=recording.pk, reason="ended", file=file_info(), file_name=name
            )
        elif state == Recording.State.FAILED:
            recording_finish(recording_id=recording.pk, reason="failed", detail="Broken.")
        if fields:
            Recording.objects.filter(pk=recording.pk).update(**fields)
        recording.refresh_from_db()
        return recording

    return make
