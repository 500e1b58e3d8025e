from __future__ import annotations

from django.http import HttpRequest

from onair.conf import onair_settings


def onair(request: HttpRequest) -> dict[str, object]:
    return {"onair": onair_settings()}
