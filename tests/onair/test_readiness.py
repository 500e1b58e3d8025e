"""``/readyz``: 503 naming what failed when the database, the channel layer (Redis) or every
SFU worker is gone, 200 again once they are back. The cluster test runs its own PostgreSQL
and Redis (the machine's are shared with other tests), stops and restarts them under a real
daphne and ``runsfu``."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.test import Client

from onair.environment import app_environment
from tests.daphne import (
    ROOT,
    daphne_command,
    free_port,
    log_errors,
    manage,
    stop,
    wait_until_serving,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.mark.django_db
def test_an_embedded_server_is_ready(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "channel_layer": "ok"},
    }
    assert "no-cache" in response["Cache-Control"]


def _as_postgres(*command: str | Path) -> list[str | Path]:
    """PostgreSQL's tools refuse to run as root: as its own user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class PrivatePostgres:
    def __init__(self) -> None:
        # Not under pytest's temporary folder, which only its owner may enter.
        self.directory, self.port = Path(tempfile.mkdtemp(prefix="onair-pg-")), free_port()
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        subprocess.run(
            _as_postgres(
                PG_BIN / "initdb", "-D", self.directory, "-U", "postgres", "-A", "trust", "-N"
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(PG_BIN / "pg_ctl", "-D", self.directory, "-o", options, "-w", "-l",
                         self.directory / "server.log", "start"),
            check=True,
            capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(PG_BIN / "pg_ctl", "-D", self.directory, "-m", "fast", "-w", "stop"),
            check=True,
            capture_output=True,
        )


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def _services(workdir: Path) -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    postgres, redis_server = PrivatePostgres(), PrivateRedis()
    postgres.start()
    redis_server.start()
    try:
        yield postgres, redis_server
    finally:
        redis_server.stop()
        subprocess.run(
            _as_postgres(PG_BIN / "pg_ctl", "-D", postgres.directory, "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(postgres.directory, ignore_errors=True)


def _readyz(base_url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _until(base_url: str, status: int, within: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + within
    while True:
        answered, body = _readyz(base_url)
        if answered == status or time.monotonic() > deadline:
            assert answered == status, body
            return body
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.skipif(
    not (PG_BIN / "initdb").exists() or shutil.which("redis-server") is None,
    reason="needs PostgreSQL 15's initdb and redis-server",
)
def test_readiness_fails_while_redis_or_the_database_is_down_and_recovers(
    tmp_path: Path,
) -> None:
    with _services(tmp_path) as (postgres, redis_server):
        env = app_environment(
            database_url=f"postgres://postgres@127.0.0.1:{postgres.port}/postgres",
            REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
            ONAIR_SFU_MODE="cluster",
            THUMBNAILS_ROOT=str(tmp_path / "thumbnails"),
            RECORDINGS_ROOT=str(tmp_path / "recordings"),
        )
        manage(env, "migrate", "--noinput", "-v0")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        daphne_log, worker_log = tmp_path / "daphne.log", tmp_path / "runsfu.log"
        with daphne_log.open("wb") as out:
            daphne = subprocess.Popen(
                daphne_command(port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        worker = None
        try:
            wait_until_serving(base_url, daphne, within=30, output=daphne_log.read_text)
            # No SFU worker yet: not ready, and it says why.
            status, body = _readyz(base_url)
            assert status == 503, body
            assert body["failed"] == ["sfu_workers"], body

            with worker_log.open("wb") as out:
                worker = subprocess.Popen(
                    # supervised, as make run-cluster runs them: a worker that loses Redis
                    # exits, and is started again
                    [sys.executable, "manage.py", "runsfu", "--workers", "2"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            body = _until(base_url, 200, within=30)
            assert body == {
                "status": "ready",
                "checks": {"database": "ok", "channel_layer": "ok", "sfu_workers": "ok"},
            }

            redis_server.stop()
            body = _until(base_url, 503)
            assert "channel_layer" in body["failed"], body  # type: ignore[operator]
            for _ in range(3):  # probed again and again: logged once
                assert _readyz(base_url)[0] == 503
            redis_server.start()
            _until(base_url, 200, within=30)  # a worker started again lists itself

            postgres.stop()
            body = _until(base_url, 503)
            # (a worker that its supervisor was still starting needs the database too)
            assert "database" in body["failed"], body  # type: ignore[operator]
            postgres.start()
            _until(base_url, 200)
        finally:
            stop(daphne)
            if worker is not None:
                stop(worker)
        log = daphne_log.read_text()
        assert log_errors(log) == [], log
        # Probed about three times a second: logged once per change of what fails.
        changes = re.findall(r"onair\.readiness (.*)", log)
        assert all(a != b for a, b in itertools.pairwise(changes)), changes
        assert any("channel_layer" in c for c in changes), changes
        assert any("database" in c for c in changes), changes
        assert log.count("GET /readyz") > 3 * len(changes), log
