"""The demo account and stream that ``make run`` sets up, so a newcomer can try OnAir."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from broadcast.models import Stream
from broadcast.services import stream_create, stream_key_rotate, stream_key_verify

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "onair-demo"
DEMO_SLUG = "demo"
DEMO_TITLE = "OnAir demo"
# The fixed local SECRET_KEY of earlier versions: a demo key derived from it is public.
_PUBLIC_SECRET_KEY = "onair-local-development-key-not-for-production"


@dataclass(frozen=True)
class Demo:
    user: User
    # The demo login's password when it may be shown now (None: changed since, or kept in
    # the password file and shown when it was made).
    password: str | None
    stream: Stream
    # None when someone has rotated or revoked the demo key since it was issued.
    stream_key: str | None


def demo_key_secret(secret_key: str | None = None) -> str:
    """The demo stream's key: derived from SECRET_KEY, so it is the same on every run
    (and secret wherever SECRET_KEY is) while only its digest is stored.
    """
    key = (secret_key or settings.SECRET_KEY).encode()
    mac = hmac.new(key, b"onair-demo-stream-key", hashlib.sha256)
    return "sk_demo_" + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")[:32]


def _password_file_read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _password_file_write(path: Path, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(password + "\n")


@transaction.atomic
def demo_ensure(
    *,
    username: str = DEMO_USERNAME,
    password: str | None = None,
    exposed: bool = False,
    password_file: Path | None = None,
) -> Demo:
    """Create the demo staff user and stream if missing; never undo later changes to them.

    On loopback (``exposed`` false) the demo login is the published ``demo`` /
    ``onair-demo``. Served beyond this machine it never is: the user gets a random password
    (kept in ``password_file``, mode 0600, and returned only when it is made), replacing the
    published one if an earlier loopback run had set it. ``password`` chooses one instead.
    A demo key derived from the old public local secret key is replaced.
    """
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        **{user_model.USERNAME_FIELD: username},
        defaults={"is_staff": True, "is_superuser": True},
    )
    shown: str | None = None
    if password is not None:
        if created:
            user.set_password(password)
            user.save()
        shown = password if user.check_password(password) else None
    elif not exposed:
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        shown = DEMO_PASSWORD if user.check_password(DEMO_PASSWORD) else None
    elif created or user.check_password(DEMO_PASSWORD):
        shown = secrets.token_urlsafe(12)
        user.set_password(shown)
        user.save()
        if password_file is not None:
            _password_file_write(password_file, shown)
    stream = Stream.objects.filter(owner=user).order_by("created_at", "id").first()
    secret = demo_key_secret()
    if stream is None:
        slug = DEMO_SLUG if not Stream.objects.filter(slug=DEMO_SLUG).exists() else None
        stream, _ = stream_create(
            owner=user,
            title=DEMO_TITLE,
            description="A stream to try OnAir with: go live from the studio, or from OBS.",
            slug=slug,
            key_secret=secret,
        )
    elif secret != demo_key_secret(_PUBLIC_SECRET_KEY) and stream_key_verify(
        stream=stream, secret=demo_key_secret(_PUBLIC_SECRET_KEY)
    ):
        stream_key_rotate(stream=stream, secret=secret)
    return Demo(
        user=user,
        password=shown,
        stream=stream,
        stream_key=secret if stream_key_verify(stream=stream, secret=secret) else None,
    )


def demo_password_stored(*, username: str, password_file: Path) -> bool:
    """Whether ``password_file`` holds the demo user's current password."""
    stored = _password_file_read(password_file)
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    return bool(stored and user is not None and user.check_password(stored))
