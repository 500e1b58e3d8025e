"""Typed access to the ``ONAIR`` settings dict, with defaults in one place."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class OnAirSettings:
    site_name: str = "OnAir"
    allow_signup: bool = True
    serve_static: bool = True
    login_failures_per_address: int = 20
    login_failures_per_username: int = 10
    login_window_seconds: int = 900
    max_streams_per_user: int = 20
    connect_timeout_seconds: float = 20.0
    publisher_media_timeout_seconds: float = 2.0
    max_sessions_per_address: int = 50
    max_viewers_per_stream: int = 0
    max_sessions: int = 0
    max_websockets: int = 0
    max_request_bytes: int = 1_048_576
    max_websocket_backlog: int = 1_048_576


def onair_settings() -> OnAirSettings:
    """Read on every call so ``override_settings`` in tests takes effect."""
    raw = getattr(settings, "ONAIR", {})
    return OnAirSettings(
        site_name=str(raw.get("SITE_NAME", OnAirSettings.site_name)),
        allow_signup=bool(raw.get("ALLOW_SIGNUP", OnAirSettings.allow_signup)),
        serve_static=bool(raw.get("SERVE_STATIC", OnAirSettings.serve_static)),
        login_failures_per_address=int(
            raw.get("LOGIN_FAILURES_PER_ADDRESS", OnAirSettings.login_failures_per_address)
        ),
        login_failures_per_username=int(
            raw.get("LOGIN_FAILURES_PER_USERNAME", OnAirSettings.login_failures_per_username)
        ),
        max_streams_per_user=int(
            raw.get("MAX_STREAMS_PER_USER", OnAirSettings.max_streams_per_user)
        ),
        login_window_seconds=int(
            raw.get("LOGIN_WINDOW_SECONDS", OnAirSettings.login_window_seconds)
        ),
        connect_timeout_seconds=float(
            raw.get("CONNECT_TIMEOUT_SECONDS", OnAirSettings.connect_timeout_seconds)
        ),
        publisher_media_timeout_seconds=float(
            raw.get(
                "PUBLISHER_MEDIA_TIMEOUT_SECONDS", OnAirSettings.publisher_media_timeout_seconds
            )
        ),
        max_sessions_per_address=int(
            raw.get("MAX_SESSIONS_PER_ADDRESS", OnAirSettings.max_sessions_per_address)
        ),
        max_viewers_per_stream=int(
            raw.get("MAX_VIEWERS_PER_STREAM", OnAirSettings.max_viewers_per_stream)
        ),
        max_sessions=int(raw.get("MAX_SESSIONS", OnAirSettings.max_sessions)),
        max_websockets=int(raw.get("MAX_WEBSOCKETS", OnAirSettings.max_websockets)),
        max_request_bytes=int(raw.get("MAX_REQUEST_BYTES", OnAirSettings.max_request_bytes)),
        max_websocket_backlog=int(
            raw.get("MAX_WEBSOCKET_BACKLOG", OnAirSettings.max_websocket_backlog)
        ),
    )


def cluster_mode() -> bool:
    """``ONAIR_SFU_MODE=cluster``: the SFU runs in ``manage.py runsfu`` workers, reached
    over the Redis channel layer (docs/SCALING.md); else it runs in each daphne process."""
    return str(getattr(settings, "ONAIR", {}).get("SFU_MODE", "embedded")) == "cluster"
