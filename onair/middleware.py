"""Django's middleware whose hooks do no I/O, run on the event loop for an async request.

For an async view (WHIP, WHEP and the ``/healthz``-style endpoints) Django runs each
``process_request`` and ``process_response`` of a ``MiddlewareMixin`` in the request's
database thread (``sync_to_async``): about 65 µs of CPU per hop, a dozen hops per request,
a fifth of what a WHEP viewer's join cost. These hooks only read the request and set
headers or lazy attributes, so they run where the request is. Middleware that may touch the
database from a hook (sessions, messages, CSRF) keeps Django's hops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.http import HttpRequest, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware as _XFrameOptions
from django.middleware.common import CommonMiddleware as _Common
from django.middleware.security import SecurityMiddleware as _Security


class _InlineHooks:
    """For a ``MiddlewareMixin`` subclass: in async mode its hooks run inline."""

    get_response: Callable[[HttpRequest], Any]

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._inline(request)
        return super().__call__(request)  # type: ignore[misc]

    async def _inline(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            response = process_request(request)
        if response is None:
            pending: Awaitable[HttpResponseBase] = self.get_response(request)
            response = await pending
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            response = process_response(request, response)
        return response


class SecurityMiddleware(_InlineHooks, _Security):
    pass


class CommonMiddleware(_InlineHooks, _Common):
    pass


class AuthenticationMiddleware(_InlineHooks, _Authentication):
    pass


class XFrameOptionsMiddleware(_InlineHooks, _XFrameOptions):
    pass
