"""The demo account and stream that ``make run`` sets up, so a newcomer can try OnAir."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from broadcast.models import Stream
from broadcast.services import stream_create, stream_key_verify

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "onair-demo"
DEMO_SLUG = "demo"
DEMO_TITLE = "OnAir demo"


@dataclass(frozen=True)
class Demo:
    user: User
    password_works: bool
    stream: Stream
    # None when someone has rotated or revoked the demo key since it was issued.
    stream_key: str | None


def demo_key_secret() -> str:
    """The demo stream's key: derived from SECRET_KEY, so it is the same on every run
    (and secret wherever SECRET_KEY is) while only its digest is stored.
    """
    mac = hmac.new(settings.SECRET_KEY.encode(), b"onair-demo-stream-key", hashlib.sha256)
    return "sk_demo_" + base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")[:32]


@transaction.atomic
def demo_ensure(*, username: str = DEMO_USERNAME, password: str = DEMO_PASSWORD) -> Demo:
    """Create the demo staff user and stream if missing; never undo later changes to them."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        **{user_model.USERNAME_FIELD: username},
        defaults={"is_staff": True, "is_superuser": True},
    )
    if created:
        user.set_password(password)
        user.save()
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
    return Demo(
        user=user,
        password_works=user.check_password(password),
        stream=stream,
        stream_key=secret if stream_key_verify(stream=stream, secret=secret) else None,
    )
