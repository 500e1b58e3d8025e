"""A recording's files over HTTP: byte ranges (seeking, resumed downloads), streamed from
the recordings' storage a chunk at a time (``onair.ranged_response``), never cached by a
shared cache (whether a stranger may fetch one changes when its owner unpublishes it)."""

from __future__ import annotations

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.cache import patch_cache_control

from onair.ranged_response import Validators, ranged_file_response
from recordings.models import Recording

CONTENT_TYPES = {"webm": "video/webm", "mp4": "video/mp4"}


def recording_file_response(
    request: HttpRequest,
    *,
    recording: Recording,
    name: str,
    content_type: str,
    download_as: str = "",
) -> HttpResponseBase:
    """Answer ``request`` with the file ``name`` (the recording's video or thumbnail);
    ``download_as``: a file name to save it under (``Content-Disposition: attachment``).
    Raises ``FileNotFoundError`` when the storage has no such file."""
    finished = recording.ended_at or recording.created_at
    response = ranged_file_response(
        request,
        storage=recording.file.storage,
        name=name,
        content_type=content_type,
        validators=Validators(
            etag=f'"{recording.pk.hex}-{recording.size}-{int(finished.timestamp())}"',
            last_modified=finished,
        ),
    )
    if download_as:
        response["Content-Disposition"] = f'attachment; filename="{download_as}"'
    patch_cache_control(response, private=True)
    return response


def recording_video_response(
    request: HttpRequest, *, recording: Recording, download_as: str = ""
) -> HttpResponseBase:
    """The recording's video (ready recordings only). Raises ``FileNotFoundError``."""
    if recording.state != Recording.State.READY or not recording.file.name:
        raise FileNotFoundError(recording.file.name)
    return recording_file_response(
        request,
        recording=recording,
        name=recording.file.name,
        content_type=CONTENT_TYPES.get(recording.container, "application/octet-stream"),
        download_as=download_as,
    )
