"""``make run``'s server in a subprocess, for the tests that need the real command line."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from onair.environment import app_environment
from tests.daphne import ROOT, DaphneProcess, daphne_process, free_port, http_request, manage

TURN_SECRET = "turn-secret-" + "q" * 24


def make_run_server_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """The last command of ``make run HOST=host`` (the server), as make would run it."""
    # under `make test` a sub-make would print "Entering/Leaving directory" around it
    environment = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", f"HOST={host}", f"PORT={port}"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = shlex.split(printed.strip().splitlines()[-1])
    assert "onair.asgi:application" in command
    return [sys.executable if part.endswith("/python") else part for part in command]


class Server(DaphneProcess):
    def request(
        self, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        response = http_request(method, self.base_url + path, body, headers, timeout=30)
        return response.status, response.headers, response.body


@contextmanager
def make_run_server(
    tmp_path: Path, *, host: str = "127.0.0.1", unset: tuple[str, ...] = (), **settings: str
) -> Iterator[tuple[Server, str]]:
    """``make run HOST=host``'s server on a fresh database with the demo stream; and its key.
    ``unset``: variables of the test environment the server does not get. It has a TURN
    server (whose secret must reach no log) unless ``settings`` say otherwise: nothing
    listens there, so each peer the SFU makes waits out its TURN allocation (≈ 5 s)."""
    port = free_port(host)
    env = app_environment(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **{
            "ONAIR_TURN_URLS": "turn:127.0.0.1:3478",
            "ONAIR_TURN_SECRET": TURN_SECRET,
            "LOG_LEVEL": "DEBUG",  # everything any logger says, Django's warnings included
            **settings,
        },
    )
    manage(env, "migrate", "--noinput")
    demo = manage(env, "onair_demo", "--host", host, "--port", str(port))
    key = re.search(r"Stream key\s+(sk_\S+)", demo)
    assert key, demo
    # As make run: no DJANGO_SETTINGS_MODULE, the application chooses its settings.
    unset = ("DJANGO_SETTINGS_MODULE", *unset)
    served_env = {name: value for name, value in env.items() if name not in unset}
    with daphne_process(
        served_env,
        tmp_path / "server.log",
        host=host,
        port=port,
        command=make_run_server_command(port, host),
        startup_seconds=30,
    ) as daphne:
        served = Server(daphne.port, daphne.env, daphne.log_path, daphne.process, daphne.host)
        yield served, key.group(1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """``make run``'s server on a fresh database with the demo stream; and its key."""
    with make_run_server(tmp_path) as served:
        yield served
