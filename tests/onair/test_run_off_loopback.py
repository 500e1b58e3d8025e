"""``make run HOST=<an address others reach>`` serves with DEBUG off: no debug page (settings,
traceback, URLconf) for anyone on the network, and the site still works without DEBUG."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from onair.environment import app_environment
from tests.onair.conftest import ROOT, Server, make_run_server

pytestmark = pytest.mark.timeout(120)

# What Django's debug pages show (technical_404.html, technical_500.html).
DEBUG_PAGE_MARKS = (
    "Traceback",
    "Python Path",
    "DisallowedHost",
    "SECRET_KEY",
    "ONAIR",
    "URLconf",
    "Django tried these URL patterns",
    "DEBUG = True",
)


def _outside_address() -> str:
    """An IPv4 address of this machine that is not loopback (eth0's)."""
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for address in addresses:
        if ":" in address:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                continue
        return address
    pytest.skip("this machine has no IPv4 address but loopback to serve on")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The public server's folder: its database and log."""
    return tmp_path_factory.mktemp("public-server")


@pytest.fixture(scope="module")
def public_server(workdir: Path) -> Iterator[Server]:
    """``make run HOST=<eth0's address>`` as an operator starts it: DJANGO_DEBUG not set.
    One for the module: its tests only read, but for a private stream of their own."""
    with make_run_server(workdir, host=_outside_address(), unset=("DJANGO_DEBUG",)) as (
        served,
        _,
    ):
        yield served


def _private_stream(workdir: Path) -> str:
    """A private stream of the demo user in the server's database; its slug."""
    code = (
        "from django.contrib.auth.models import User\n"
        "from broadcast.models import Stream\n"
        "from broadcast.services import stream_create\n"
        "stream, _ = stream_create(owner=User.objects.get(username='demo'), title='Secret',"
        " visibility=Stream.Visibility.PRIVATE)\n"
        "print(stream.slug)\n"
    )
    env = app_environment(database_url=f"sqlite:///{workdir / 'db.sqlite3'}")
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]  # after what the shell says of its automatic imports


def _assert_no_debug_page(body: str) -> None:
    shown = [mark for mark in DEBUG_PAGE_MARKS if mark in body]
    assert not shown, f"a debug page ({shown}):\n{body[:2000]}"


def test_an_outside_client_gets_no_debug_page(public_server: Server) -> None:
    # The host name the operator has not added to ALLOWED_HOSTS yet.
    status, _, body = public_server.request("GET", "/nope")
    assert status == 400
    _assert_no_debug_page(body)

    # A Host header Django accepts, through the outside address.
    local = {"Host": f"127.0.0.1:{public_server.port}"}
    status, _, body = public_server.request("GET", "/nope", headers=local)
    assert status == 404
    _assert_no_debug_page(body)
    assert "This page does not exist." in body

    # The site works without DEBUG: the home page and its static files.
    status, _, body = public_server.request("GET", "/", headers=local)
    assert status == 200
    assert "/static/css/onair.css" in body
    status, headers, body = public_server.request("GET", "/static/css/onair.css", headers=local)
    assert status == 200
    assert headers["Content-Type"].startswith("text/css")


def test_a_private_stream_answers_as_a_missing_one(public_server: Server, workdir: Path) -> None:
    slug = _private_stream(workdir)
    local = {"Host": f"127.0.0.1:{public_server.port}"}
    private = public_server.request("GET", f"/watch/{slug}/", headers=local)
    missing = public_server.request("GET", "/watch/no-such-stream/", headers=local)
    assert private[0] == missing[0] == 404
    _assert_no_debug_page(private[2])
    assert private[2] == missing[2]
    # Every header but the date: Vary (Cookie: the session was read) included.
    assert {k: v for k, v in private[1].items() if k != "Date"} == {
        k: v for k, v in missing[1].items() if k != "Date"
    }
