"""Login throttling: failed logins are counted per client address and per username, in
Django's cache (shared by every process when ``REDIS_URL`` is set), over a fixed window.

Past ``ONAIR["LOGIN_FAILURES_PER_ADDRESS"]`` failures from one address, or
``ONAIR["LOGIN_FAILURES_PER_USERNAME"]`` for one username, within
``ONAIR["LOGIN_WINDOW_SECONDS"]``, both the site's login form and
``POST /api/v1/auth/token/`` answer ``429`` with ``Retry-After`` until the window ends,
even for the right password. Only failures count: people who log in are never slowed down.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from onair.conf import onair_settings

_PREFIX = "onair:login-failures:"


def _keys(*, username: str | None, address: str | None) -> list[tuple[str, int]]:
    """The cache keys of the counters that apply, each with its limit."""
    conf = onair_settings()
    keys: list[tuple[str, int]] = []
    if address:
        keys.append((f"{_PREFIX}address:{address}", conf.login_failures_per_address))
    if username:
        # Hashed: usernames are any text (even a lone surrogate from JSON's \ud800, which the
        # serializer refuses later); cache keys must be short and plain.
        name = username.strip().lower().encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(name).hexdigest()
        keys.append((f"{_PREFIX}username:{digest}", conf.login_failures_per_username))
    return keys


def login_retry_after(*, username: str | None, address: str | None) -> int | None:
    """Seconds until a login for ``username`` from ``address`` is taken again; ``None`` when
    it is taken now."""
    now = time.time()
    waits = []
    for key, limit in _keys(username=username, address=address):
        window = cache.get(key)
        if window is not None and window["failures"] >= limit:
            waits.append(max(1, math.ceil(window["until"] - now)))
    return max(waits) if waits else None


def login_failure_record(*, username: str | None, address: str | None) -> None:
    """Count one failed login against the address and the username."""
    seconds = onair_settings().login_window_seconds
    now = time.time()
    for key, _ in _keys(username=username, address=address):
        window = cache.get(key)
        if window is None or window["until"] <= now:
            window = {"failures": 0, "until": now + seconds}
        window["failures"] += 1
        cache.set(key, window, timeout=max(1, math.ceil(window["until"] - now)))


def client_address(request: HttpRequest | Request) -> str | None:
    """The peer's address: daphne's, or the proxy's client with ``--proxy-headers``; never a
    client's own X-Forwarded-For header, which would let it pick its counter."""
    address = request.META.get("REMOTE_ADDR")
    return str(address) if address else None


def _posted_username(data: Any) -> str | None:
    value = data.get("username") if hasattr(data, "get") else None
    return value if isinstance(value, str) else None


class LoginThrottle(BaseThrottle):
    """Refuses a login from an address, or for a username, that failed too often lately."""

    def __init__(self) -> None:
        self.retry_after: int | None = None

    def allow_request(self, request: Any, view: Any) -> bool:
        self.retry_after = login_retry_after(
            username=_posted_username(request.data), address=client_address(request)
        )
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after


class TokenApi(ObtainAuthToken):
    """``POST /api/v1/auth/token/``: DRF's token view, throttled."""

    throttle_classes = (LoginThrottle,)

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except serializers.ValidationError:
            login_failure_record(
                username=_posted_username(request.data), address=client_address(request)
            )
            raise


class LoginView(auth_views.LoginView):
    """The site's login form, throttled: a form error and ``429`` while refused."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        retry_after = login_retry_after(
            username=request.POST.get("username"), address=client_address(request)
        )
        if retry_after is None:
            return super().post(request, *args, **kwargs)
        # An unbound form: a refused login must not even check the password.
        form = self.get_form_class()(
            request=request, initial={"username": request.POST.get("username", "")}
        )
        context = self.get_context_data(
            form=form, refused=f"Too many failed logins. Try again in {retry_after} seconds."
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(retry_after)
        return response

    def form_invalid(self, form: Any) -> HttpResponse:
        login_failure_record(
            username=self.request.POST.get("username"), address=client_address(self.request)
        )
        return super().form_invalid(form)
