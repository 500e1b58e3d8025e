"""The watch page: a viewer opens /watch/<slug>/ and the page plays the broadcast."""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from broadcast.selectors import stream_get_visible
from onair.exceptions import NotFoundError
from signaling.ice import PeerRole, client_ice_fields


def watch(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        stream = stream_get_visible(slug=slug, user=request.user)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    client_config = {
        "slug": stream.slug,
        "title": stream.title,
        "ws_path": f"/ws/watch/{stream.slug}/",
        "stream_state": stream.state,
        "viewers": stream.viewer_count,
        **client_ice_fields(user=uuid.uuid4().hex, role=PeerRole.VIEWER),
    }
    return render(request, "viewers/watch.html", {"stream": stream, "client_config": client_config})
