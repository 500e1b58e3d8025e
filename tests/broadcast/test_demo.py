from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from broadcast.demo import DEMO_PASSWORD, demo_key_secret
from broadcast.models import Stream
from broadcast.services import stream_key_rotate, stream_key_verify

pytestmark = pytest.mark.django_db


def _run() -> str:
    out = StringIO()
    call_command("onair_demo", "--host", "0.0.0.0", "--port", "8123", stdout=out)
    return out.getvalue()


def test_creates_user_and_stream_once_and_prints_them() -> None:
    first = _run()
    second = _run()

    user = User.objects.get(username="demo")
    assert user.is_staff
    assert user.is_superuser
    assert user.check_password(DEMO_PASSWORD)
    stream = Stream.objects.get()
    assert stream.slug == "demo"
    assert stream.owner == user
    assert stream_key_verify(stream=stream, secret=demo_key_secret())
    assert first == second
    for expected in (
        "http://127.0.0.1:8123/",
        "http://127.0.0.1:8123/admin/",
        "http://127.0.0.1:8123/api/docs/",
        "http://127.0.0.1:8123/studio/demo/",
        "http://127.0.0.1:8123/watch/demo/",
        "http://127.0.0.1:8123/whip/demo",
        f"demo / {DEMO_PASSWORD}",
        demo_key_secret(),
    ):
        assert expected in first


def test_respects_later_changes() -> None:
    _run()
    user = User.objects.get(username="demo")
    user.set_password("changed-by-owner")
    user.save()
    stream_key_rotate(stream=Stream.objects.get())

    output = _run()

    assert User.objects.get(username="demo").check_password("changed-by-owner")
    assert demo_key_secret() not in output
    assert "password was changed" in output
    assert "rotated since" in output
    assert Stream.objects.count() == 1
