"""Replay pages: a recording's page and its file (with HTTP range requests), the owner's
publish and delete, and the "Past broadcasts" list the watch page reloads.

A recording the user may not see is a 404, the same as one that does not exist.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from broadcast.models import Stream
from broadcast.selectors import AnyUser, stream_get_visible
from chat.selectors import chat_replay
from onair.exceptions import ApplicationError
from recordings import selectors, services
from recordings.models import Recording
from recordings.serving import recording_file_response, recording_video_response

PAST_BROADCASTS_SHOWN = 12


def _recording(request: HttpRequest, recording_id: uuid.UUID) -> Recording:
    try:
        return selectors.recording_get(recording_id=recording_id, user=request.user)
    except ApplicationError as error:
        raise Http404(error.message) from error


def _managed(request: HttpRequest, recording_id: uuid.UUID) -> Recording:
    recording = _recording(request, recording_id)
    if not selectors.recording_is_managed_by(recording=recording, user=request.user):
        raise Http404("No such recording.")
    return recording


def playable(*, stream: Stream, user: AnyUser) -> QuerySet[Recording]:
    """The stream's recordings ``user`` may play, newest first (its "Past broadcasts")."""
    return selectors.recording_list(stream=stream, user=user).filter(state=Recording.State.READY)


@require_GET
def replay(request: HttpRequest, recording_id: uuid.UUID) -> HttpResponse:
    recording = _recording(request, recording_id)
    others = playable(stream=recording.stream, user=request.user).exclude(pk=recording.pk)
    return render(
        request,
        "recordings/replay.html",
        {
            "recording": recording,
            "stream": recording.stream,
            "manages": selectors.recording_is_managed_by(recording=recording, user=request.user),
            "others": others[:PAST_BROADCASTS_SHOWN],
            "chat": chat_replay(recording=recording) if recording.is_ready else [],
        },
    )


@require_http_methods(["GET", "HEAD"])
def recording_file(request: HttpRequest, recording_id: uuid.UUID) -> HttpResponseBase:
    """The recording's video, served from its storage with byte ranges (seeking)."""
    recording = _recording(request, recording_id)
    try:
        return recording_video_response(request, recording=recording)
    except FileNotFoundError as error:
        raise Http404("This recording has no file to play.") from error


@require_http_methods(["GET", "HEAD"])
def recording_poster(request: HttpRequest, recording_id: uuid.UUID) -> HttpResponseBase:
    """The recording's thumbnail (a JPEG), the player's poster."""
    recording = _recording(request, recording_id)
    name = recording.thumbnail.name
    try:
        if not name:
            raise FileNotFoundError(name)
        return recording_file_response(
            request, recording=recording, name=name, content_type="image/jpeg"
        )
    except FileNotFoundError as error:
        raise Http404("This recording has no thumbnail.") from error


@login_required
@require_POST
def recording_publish(request: HttpRequest, recording_id: uuid.UUID) -> HttpResponse:
    recording = _managed(request, recording_id)
    published = request.POST.get("published") == "1"
    services.recording_set_published(recording=recording, user=request.user, published=published)
    messages.success(
        request,
        "The recording is published: anyone can watch it while the stream is public."
        if published
        else "The recording is unpublished: only you (and staff) can watch it.",
    )
    return redirect("recordings:replay", recording_id=recording.pk)


@login_required
@require_POST
def recording_delete(request: HttpRequest, recording_id: uuid.UUID) -> HttpResponse:
    recording = _managed(request, recording_id)
    stream = recording.stream
    try:
        services.recording_delete(recording=recording, user=request.user)
    except ApplicationError as error:  # still being written
        messages.error(request, error.message)
        return redirect("recordings:replay", recording_id=recording.pk)
    messages.success(request, "The recording was deleted.")
    return redirect("viewers:watch", slug=stream.slug)


@require_GET
def stream_past_broadcasts(request: HttpRequest, slug: str) -> HttpResponse:
    """The "Past broadcasts" list of a stream, as the watch page shows it (it reloads it when
    a recording becomes ready)."""
    try:
        stream = stream_get_visible(slug=slug, user=request.user)
    except ApplicationError as error:
        raise Http404(error.message) from error
    return render(
        request,
        "recordings/past_broadcasts_list.html",
        {"recordings": playable(stream=stream, user=request.user)[:PAST_BROADCASTS_SHOWN]},
    )
