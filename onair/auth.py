from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from rest_framework.request import Request

from onair.exceptions import PermissionDeniedError


def authenticated_user(request: HttpRequest | Request) -> User:
    """The request's user where a login is already required (narrows the type)."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise PermissionDeniedError("Log in first.", code="not_authenticated")
    return user
