"""The ASGI application daphne serves: HTTP to Django, WebSockets to Channels consumers."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onair.settings.local")

from django.core.asgi import get_asgi_application

# Set up Django (apps, models) before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware, SessionMiddleware  # noqa: E402
from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from onair.conf import onair_settings  # noqa: E402
from onair.origin import SameOriginValidator  # noqa: E402
from signaling.gateway import freeze_startup_objects, reserve_ice_port  # noqa: E402
from signaling.routing import websocket_urlpatterns  # noqa: E402


class _AuthMiddleware(AuthMiddleware):
    """Channels' ``AuthMiddleware`` without its trip to the database thread for a socket
    that carries no session cookie (an anonymous viewer: most of a crowd joining), whose
    user is anonymous either way."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        if scope["session"].session_key is None:
            scope["user"]._wrapped = AnonymousUser()
        else:
            await super().resolve_scope(scope)


http_app = ASGIStaticFilesHandler(django_asgi_app) if onair_settings().serve_static else None

application = ProtocolTypeRouter(
    {
        "http": http_app or django_asgi_app,
        "websocket": SameOriginValidator(
            CookieMiddleware(SessionMiddleware(_AuthMiddleware(URLRouter(websocket_urlpatterns))))
        ),
    }
)

# Load every view now rather than on the first request, then keep what the process holds for
# its whole life out of the garbage collector's full collections (see sfu.heap).
get_resolver().url_patterns  # noqa: B018
reserve_ice_port()
freeze_startup_objects()
