"""Typed access to the ``ONAIR`` settings dict, with defaults in one place."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class OnAirSettings:
    site_name: str = "OnAir"
    allow_signup: bool = True
    serve_static: bool = True


def onair_settings() -> OnAirSettings:
    """Read on every call so ``override_settings`` in tests takes effect."""
    raw = getattr(settings, "ONAIR", {})
    return OnAirSettings(
        site_name=str(raw.get("SITE_NAME", OnAirSettings.site_name)),
        allow_signup=bool(raw.get("ALLOW_SIGNUP", OnAirSettings.allow_signup)),
        serve_static=bool(raw.get("SERVE_STATIC", OnAirSettings.serve_static)),
    )
