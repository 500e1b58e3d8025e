"""The watch page (/watch/<slug>/) and the embeddable player (/embed/<slug>/): a viewer
opens either and it plays the broadcast."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import escape
from django.views.decorators.clickjacking import xframe_options_exempt

from broadcast.models import Stream
from broadcast.selectors import stream_get_visible
from onair.exceptions import NotFoundError
from signaling.ice import PeerRole, client_ice_fields


def _visible_stream(request: HttpRequest, slug: str) -> Stream:
    """The stream if this user may watch it; else 404, as for one that does not exist."""
    try:
        return stream_get_visible(slug=slug, user=request.user)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc


def _client_config(stream: Stream) -> dict[str, Any]:
    return {
        "slug": stream.slug,
        "title": stream.title,
        "ws_path": f"/ws/watch/{stream.slug}/",
        "stream_state": stream.state,
        "viewers": stream.viewer_count,
        **client_ice_fields(user=uuid.uuid4().hex, role=PeerRole.VIEWER),
    }


def embed_code(*, url: str, title: str) -> str:
    """The ``<iframe>`` another site pastes to show the player at ``url``."""
    return (
        f'<iframe src="{escape(url)}" width="640" height="360" title="{escape(title)}" '
        'allow="autoplay; fullscreen; picture-in-picture" allowfullscreen '
        'style="border: 0; max-width: 100%;"></iframe>'
    )


def watch(request: HttpRequest, slug: str) -> HttpResponse:
    stream = _visible_stream(request, slug)
    embed_url = request.build_absolute_uri(reverse("viewers:embed", args=[stream.slug]))
    context = {
        "stream": stream,
        "client_config": _client_config(stream),
        "share_url": request.build_absolute_uri(reverse("viewers:watch", args=[stream.slug])),
        "embed_code": embed_code(url=embed_url, title=stream.title),
    }
    return render(request, "viewers/watch.html", context)


@xframe_options_exempt
def embed(request: HttpRequest, slug: str) -> HttpResponse:
    """The player alone, for other sites' ``<iframe>``: the one page any origin may frame
    (every other one answers ``X-Frame-Options: DENY``). A stream this user may not watch
    is missing here as everywhere (and its 404 page refuses framing like the others)."""
    stream = _visible_stream(request, slug)
    response = render(
        request,
        "viewers/embed.html",
        {
            "stream": stream,
            "client_config": _client_config(stream),
            "watch_url": request.build_absolute_uri(reverse("viewers:watch", args=[stream.slug])),
        },
    )
    response["Content-Security-Policy"] = "frame-ancestors *"
    return response
