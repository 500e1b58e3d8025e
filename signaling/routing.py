"""WebSocket routes, mounted by ``onair.asgi`` behind origin and auth middleware
(docs/SIGNALING.md)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from signaling.consumers import StudioConsumer, WatchConsumer

websocket_urlpatterns: list[URLPattern | URLResolver] = [
    path("ws/studio/<slug:slug>/", StudioConsumer.as_asgi()),
    path("ws/watch/<slug:slug>/", WatchConsumer.as_asgi()),
]
