from __future__ import annotations

import stat
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import override_settings

from broadcast.demo import DEMO_PASSWORD, demo_key_secret
from broadcast.models import Stream
from broadcast.services import stream_create, stream_key_rotate, stream_key_verify
from onair.network import host_is_loopback
from onair.settings.env import local_secret_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(tmp_path: Path) -> Iterator[Path]:
    with override_settings(VAR_DIR=tmp_path):
        yield tmp_path


def _run(host: str = "127.0.0.1") -> str:
    out = StringIO()
    call_command("onair_demo", "--host", host, "--port", "8123", stdout=out)
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


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
        ("live.example.com", False),
    ],
)
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert host_is_loopback(host) is loopback


def test_off_loopback_the_demo_login_is_random_kept_in_var_and_shown_once(
    var_dir: Path,
) -> None:
    first = _run("0.0.0.0")
    second = _run("0.0.0.0")

    user = User.objects.get(username="demo")
    assert not user.check_password(DEMO_PASSWORD)
    assert DEMO_PASSWORD not in first
    stored = (var_dir / "demo-password").read_text().strip()
    assert len(stored) >= 16
    assert user.check_password(stored)
    assert stat.S_IMODE((var_dir / "demo-password").stat().st_mode) == 0o600
    assert f"demo / {stored}" in first
    assert stored not in second
    assert str(var_dir / "demo-password") in second
    assert "http://127.0.0.1:8123/" in first
    # The server it prints for runs without DEBUG: only ALLOWED_HOSTS are answered.
    assert "the host names answered: " in first
    assert "ALLOWED_HOSTS=<name or address>" in first
    assert "ALLOWED_HOSTS" not in _run("127.0.0.1")


def test_a_published_demo_password_is_replaced_once_served_beyond_loopback(
    var_dir: Path,
) -> None:
    assert f"demo / {DEMO_PASSWORD}" in _run("127.0.0.1")
    exposed = _run("0.0.0.0")

    user = User.objects.get(username="demo")
    assert not user.check_password(DEMO_PASSWORD)
    assert DEMO_PASSWORD not in exposed
    assert user.check_password((var_dir / "demo-password").read_text().strip())
    # Back on loopback the random password stays: it is not shown again.
    again = _run("127.0.0.1")
    assert DEMO_PASSWORD not in again
    assert "its password is in" in again


def test_a_demo_key_from_the_old_public_secret_key_is_replaced() -> None:
    public = demo_key_secret("onair-local-development-key-not-for-production")
    owner = User.objects.create_user("demo", password=DEMO_PASSWORD, is_staff=True)
    stream, _ = stream_create(owner=owner, title="OnAir demo", slug="demo", key_secret=public)

    output = _run("0.0.0.0")

    assert not stream_key_verify(stream=stream, secret=public)
    assert stream_key_verify(stream=stream, secret=demo_key_secret())
    assert public not in output
    assert demo_key_secret() in output


def test_the_local_secret_key_is_made_per_install_and_kept(tmp_path: Path) -> None:
    first = local_secret_key(tmp_path / "a" / "secret_key")
    assert local_secret_key(tmp_path / "a" / "secret_key") == first
    assert local_secret_key(tmp_path / "b" / "secret_key") != first
    assert len(first) >= 50
    assert stat.S_IMODE((tmp_path / "a" / "secret_key").stat().st_mode) == 0o600
