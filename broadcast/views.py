"""HTML pages: the live list and "My streams". Thin, like the API: services do the work."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import get_conditional_response, patch_cache_control
from django.views.decorators.http import require_POST, require_safe

from broadcast import selectors, services
from broadcast.forms import StreamForm
from broadcast.models import Stream
from broadcast.services import IssuedKey
from onair.auth import authenticated_user
from onair.conf import onair_settings
from onair.exceptions import ApplicationError
from signaling.ice import PeerRole, client_ice_fields

# The session entry that carries a new key's secret to the next page view, once.
_NEW_KEY_SESSION = "onair_new_key"


def _remember_new_key(request: HttpRequest, *, stream: Stream, issued: IssuedKey) -> None:
    request.session[_NEW_KEY_SESSION] = {
        "slug": stream.slug,
        "title": stream.title,
        "secret": issued.secret,
    }


def whip_url(request: HttpRequest, slug: str) -> str:
    """The stream's WHIP endpoint as an encoder reaches this site (OBS's "Server")."""
    return request.build_absolute_uri(reverse("signaling:whip", args=[slug]))


def home(request: HttpRequest) -> HttpResponse:
    streams = selectors.stream_list_live(user=request.user)[:48]
    return render(request, "broadcast/home.html", {"streams": streams})


# A poster asked for by its versioned address (``Stream.poster_url``) never changes.
_POSTER_VERSIONED_MAX_AGE = 365 * 24 * 3600


@require_safe
def stream_poster(request: HttpRequest, slug: str) -> HttpResponse:
    """The stream's latest poster (a JPEG of its video), for whoever may watch the stream;
    404 otherwise, as for a stream that does not exist. At its versioned address
    (``?v=``, the one pages use) it is cached for good; at any other it is revalidated
    (ETag) on each use. Only public streams' posters may be kept by shared caches."""
    try:
        stream = selectors.stream_get_visible(slug=slug, user=request.user)
        jpeg = selectors.stream_poster_read(stream=stream)
    except ApplicationError as error:
        raise Http404(error.message) from error
    etag = f'"{stream.poster_version}"'
    response = get_conditional_response(request, etag=etag) or HttpResponse(
        jpeg, content_type="image/jpeg"
    )
    response["ETag"] = etag
    shared = (
        {"public": True} if stream.visibility == Stream.Visibility.PUBLIC else {"private": True}
    )
    if request.GET.get("v") == stream.poster_version:
        patch_cache_control(response, max_age=_POSTER_VERSIONED_MAX_AGE, immutable=True, **shared)
    else:
        patch_cache_control(response, no_cache=True, **shared)
    return response


@login_required
def my_streams(request: HttpRequest) -> HttpResponse:
    form = StreamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            stream, issued = services.stream_create(
                owner=authenticated_user(request), **form.cleaned_data
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            _remember_new_key(request, stream=stream, issued=issued)
            messages.success(request, f"“{stream.title}” is ready.")
            return redirect("broadcast:my-streams")
    # Staff see their own streams here too; the admin lists everyone's.
    streams = selectors.stream_list(user=request.user, owned_only=True)
    new_key = request.session.pop(_NEW_KEY_SESSION, None)
    if new_key is not None:  # what OBS (or any WHIP client) needs beside the key
        new_key["whip_url"] = whip_url(request, new_key["slug"])
    return render(
        request,
        "broadcast/my_streams.html",
        {
            "form": form,
            "streams": streams,
            "new_key": new_key,
            "states": Stream.State,
        },
        status=400 if form.errors else 200,
    )


@login_required
def stream_edit(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
    except ApplicationError as error:
        raise Http404(error.message) from error
    initial = {
        "title": stream.title,
        "description": stream.description,
        "visibility": stream.visibility,
    }
    form = StreamForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        services.stream_update(stream=stream, **form.cleaned_data)
        messages.success(request, f"“{stream.title}” was saved.")
        return redirect("broadcast:my-streams")
    return render(
        request,
        "broadcast/stream_edit.html",
        {"form": form, "stream": stream},
        status=400 if form.errors else 200,
    )


def _stream_action(
    request: HttpRequest, slug: str, action: Callable[[Stream], str]
) -> HttpResponse:
    """Run ``action`` on one of the user's streams; its result or refusal becomes a message."""
    try:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        messages.success(request, action(stream))
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect("broadcast:my-streams")


@login_required
@require_POST
def stream_key_rotate(request: HttpRequest, slug: str) -> HttpResponse:
    def rotate(stream: Stream) -> str:
        _remember_new_key(request, stream=stream, issued=services.stream_key_rotate(stream=stream))
        return f"New key issued for “{stream.title}”; the old one no longer works."

    return _stream_action(request, slug, rotate)


@login_required
@require_POST
def stream_key_revoke(request: HttpRequest, slug: str) -> HttpResponse:
    def revoke(stream: Stream) -> str:
        services.stream_key_revoke(stream=stream)
        return f"Key revoked: nobody can publish to “{stream.title}” until you issue a new key."

    return _stream_action(request, slug, revoke)


@login_required
@require_POST
def stream_end(request: HttpRequest, slug: str) -> HttpResponse:
    def end(stream: Stream) -> str:
        services.stream_end(stream=stream, reason=Stream.EndReason.OWNER)
        return f"“{stream.title}” has ended."

    return _stream_action(request, slug, end)


@login_required
@require_POST
def stream_delete(request: HttpRequest, slug: str) -> HttpResponse:
    def delete(stream: Stream) -> str:
        services.stream_delete(stream=stream)
        return f"“{stream.title}” was deleted."

    return _stream_action(request, slug, delete)


@login_required
def studio(request: HttpRequest, slug: str) -> HttpResponse:
    """The broadcaster's page: devices, preview, go live, live stats, local recording.

    The owner (and staff) broadcast by their login; anyone else who can see the stream gets
    the page with a stream-key field, and the signaling refuses them until the key is right.
    """
    try:
        stream = selectors.stream_get_managed(slug=slug, user=request.user)
        owner = True
    except ApplicationError:
        try:
            stream = selectors.stream_get_visible(slug=slug, user=request.user)
        except ApplicationError as exc:
            raise Http404(exc.message) from exc
        owner = False
    client_config = {
        "slug": stream.slug,
        "ws_path": f"/ws/studio/{stream.slug}/",
        "stream_state": stream.state,
        "end_reasons": dict(Stream.EndReason.choices),
        # what the SFU lets a publisher send: the studio's encodings share it
        "publish_max_bitrate": onair_settings().publish_max_bitrate,
        **client_ice_fields(user=f"studio-{stream.pk}", role=PeerRole.PUBLISHER),
    }
    return render(
        request,
        "broadcast/studio.html",
        {
            "stream": stream,
            "owner": owner,
            "client_config": client_config,
            "whip_url": whip_url(request, stream.slug),
        },
    )
