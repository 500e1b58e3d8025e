"""Django's middleware whose hooks do no I/O runs inline for an async view (onair.middleware):
no trip to a thread per hook, the same headers."""

from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.test import AsyncClient, Client

pytestmark = pytest.mark.django_db

INLINE = ("SecurityMiddleware", "CommonMiddleware", "AuthenticationMiddleware")
INLINE += ("XFrameOptionsMiddleware",)


def _hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    hopped: list[str] = []
    original = SyncToAsync.__init__

    def spy(self: SyncToAsync[Any, Any], func: Any, *args: Any, **kwargs: Any) -> None:
        hopped.append(getattr(func, "__qualname__", repr(func)))
        original(self, func, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__init__", spy)
    return hopped


async def test_an_async_views_middleware_hooks_run_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    hopped = _hops(monkeypatch)
    response = await AsyncClient().options("/whep/demo")  # an async view, no database
    assert response.status_code == 204
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert not [name for name in hopped if name.split(".")[0] in INLINE], hopped
    # the session's may save it: still in the request's thread
    assert "SessionMiddleware.process_response" in hopped


def test_a_sync_view_gets_the_same_headers() -> None:
    response = Client().get("/accounts/login/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
