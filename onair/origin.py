"""The WebSocket origin check: only the site's own pages may open its WebSockets.

Channels' ``AllowedHostsOriginValidator`` compares the Origin's host name with
``ALLOWED_HOSTS`` and ignores its port, so a page served by anything else on the same host
(another port) could drive a logged-in user's studio. Here the Origin's scheme, host and
port must be the request's own (its ``Host`` header, itself in ``ALLOWED_HOSTS``), or be
listed in ``CSRF_TRUSTED_ORIGINS``: what Django's CSRF check accepts for a form post.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, host, port


def _origin(value: str) -> Origin | None:
    """``scheme://host[:port]`` with the port made explicit; ``None`` if it is not one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def origin_allowed(*, origin: str | None, host: str | None, secure: bool) -> bool:
    """Whether a WebSocket whose request says ``Origin: origin`` and ``Host: host`` (over TLS
    to this server when ``secure``) comes from one of the site's pages."""
    parsed = _origin(origin) if origin else None
    if parsed is None:
        return False
    if parsed in {_origin(trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS}:
        return True
    scheme, origin_host, port = parsed
    if secure and scheme != "https":
        return False
    if host is None:
        # No Host header (not a browser): an allowed host on its scheme's default port only.
        return validate_host(origin_host, settings.ALLOWED_HOSTS) and (
            port == _DEFAULT_PORTS[scheme]
        )
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    # The Host header as an origin on the page's scheme (behind a TLS proxy daphne sees ws).
    own = _origin(f"{scheme}://{host}")
    return own is not None and own[1:] == (origin_host, port)


class SameOriginValidator:
    """ASGI middleware: a WebSocket from any other origin is refused (HTTP 403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        origin, host = headers.get(b"origin"), headers.get(b"host")
        if origin_allowed(
            origin=origin.decode("latin1") if origin is not None else None,
            host=host.decode("latin1") if host is not None else None,
            secure=scope.get("scheme") == "wss",
        ):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
