"""WebSocket routes, mounted by ``onair.asgi`` behind origin and auth middleware.

The studio and watch consumers (``/ws/studio/<slug>/``, ``/ws/watch/<slug>/``, see
docs/SIGNALING.md) are added here.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

websocket_urlpatterns: list[URLPattern | URLResolver] = []
