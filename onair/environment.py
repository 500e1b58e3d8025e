"""The environment of an OnAir process that tests or the bench start (daphne, runsfu,
manage.py). Django-free: the bench and the tests import it before any settings exist."""

from __future__ import annotations

import os
import secrets
import socket

# Inherited values that would point a child at the developer's own database or settings.
_NOT_INHERITED = frozenset({"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"})


def app_environment(*, database_url: str, **settings: str) -> dict[str, str]:
    """This process's environment without its database, Redis and settings choice, with
    local settings on ``database_url``, a fresh secret key and ``settings`` on top."""
    env = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE="onair.settings.local",
        DATABASE_URL=database_url,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
        DJANGO_DEBUG="0",
        PYTHONUNBUFFERED="1",
        # Tests and the bench open many sessions from one address (loopback).
        ONAIR_MAX_SESSIONS_PER_ADDRESS="1000",
        # Their broadcasts are recorded, and posters taken, only when asked (these settings,
        # or a stream's ``record``): the bench's forwarding figures and the tests' resource
        # baselines are without the recorder and without the thumbnails' decoding.
        ONAIR_RECORD_BY_DEFAULT="0",
        ONAIR_THUMBNAIL_SECONDS="0",
    )
    env.update(settings)
    return own_ice_port(env)


def own_ice_port(env: dict[str, str]) -> dict[str, str]:
    """``env`` for one more SFU process on this machine: with the shared ICE port on
    (``ONAIR_UDP_MUX_PORT``, or its default), a free port of its own, as two processes
    cannot share one (tests and the bench run several servers at once, and so may others
    on the machine)."""
    from onair.conf import environment_overrides, settings_from

    if not settings_from(environment_overrides(env)).ice.udp_mux_port:
        return env
    return {**env, "ONAIR_UDP_MUX_PORT": str(free_udp_port())}


def free_udp_port() -> int:
    """A UDP port nothing is bound to (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])
