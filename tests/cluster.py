"""Cluster mode with real processes: ``cluster`` starts two ``runsfu`` workers and two
daphne processes on a fresh PostgreSQL database and its own Redis key prefix; import it
(``cluster_fixture``, and ``CLUSTER_SKIP``) into a test module to use it."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis

from onair.environment import app_environment, own_ice_port
from signaling.gateway.directory import WorkerInfo
from tests.daphne import (
    ROOT,
    daphne_command,
    free_port,
    log_errors,
    manage,
    stop,
    wait_until_serving,
)

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/9")
MAX_VIEWERS_PER_WORKER = 2
METRICS_TOKEN = secrets.token_urlsafe(16)
STARTUP_SECONDS = 30


def services_unreachable() -> str | None:
    """Why the cluster's PostgreSQL or Redis cannot be reached, or None."""
    for name, address in (("PostgreSQL", ("127.0.0.1", 5432)), ("Redis", ("127.0.0.1", 6379))):
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError as error:
            return f"{name} at {address[0]}:{address[1]} is unreachable: {error}"
    return None


CLUSTER_SKIP = pytest.mark.skipif(
    services_unreachable() is not None, reason=str(services_unreachable())
)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


def _send(method: str, url: str, body: str, headers: dict[str, str]) -> Response:
    request = urllib.request.Request(url, data=body.encode() or None, method=method)
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return Response(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read().decode())


async def http(
    method: str, url: str, body: str = "", headers: dict[str, str] | None = None
) -> Response:
    """A request to one of the cluster's processes (off the event loop: urllib blocks)."""
    return await asyncio.to_thread(_send, method, url, body, headers or {})


@dataclass
class Cluster:
    env: dict[str, str]
    workdir: Path
    daphne: list[str] = field(default_factory=list)  # base URLs: A, B
    prefix: str = field(default_factory=lambda: f"onair-test-{secrets.token_hex(4)}")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    redis: redis.Redis = field(default_factory=lambda: redis.Redis.from_url(REDIS_URL))
    metrics: dict[int, str] = field(default_factory=dict)  # a worker's pid → its /metrics

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def spawn(
        self, name: str, *command: str, settings: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` with the cluster's environment (and ``settings`` on top); its
        output goes to ``workdir/<name>.log``."""
        log = (self.workdir / f"{name}.log").open("ab")
        env = {**self.env, **(settings or {})}
        process = subprocess.Popen(
            list(command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def start_daphne(self) -> None:
        port = free_port()
        process = self.spawn(f"daphne-{port}", *daphne_command(port))
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process, within=STARTUP_SECONDS, output=self.logs)
        self.daphne.append(url)

    def start_worker(self, **settings: str) -> None:
        before = len(self.workers())
        name = f"runsfu-{len(self.processes)}"
        port = free_port()
        # each worker its own metrics port, and its own shared ICE port when that is on
        settings = own_ice_port({**self.env, "ONAIR_METRICS_SFU_PORT": str(port), **settings})
        process = self.spawn(name, sys.executable, "manage.py", "runsfu", settings=settings)
        self.metrics[process.pid] = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + STARTUP_SECONDS
        while len(self.workers()) <= before:
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.1)

    def worker_process(self, worker: WorkerInfo) -> tuple[subprocess.Popen[bytes], Path]:
        """The process of a worker, and its log."""
        index, process = next((i, p) for i, p in enumerate(self.processes) if p.pid == worker.pid)
        return process, self.workdir / f"runsfu-{index}.log"

    def workers(self) -> list[WorkerInfo]:
        keys = f"{self.prefix}:sfu:worker"
        ids = sorted(m.decode() for m in self.redis.smembers(f"{keys}s"))
        records = self.redis.mget([f"{keys}:{i}" for i in ids]) if ids else []
        return [WorkerInfo.from_json(r) for r in records if r is not None]

    def new_stream(self, title: str) -> tuple[str, str, str]:
        """A public stream of a new user: (slug, id, stream key)."""
        code = (
            "from django.contrib.auth.models import User; "
            "from broadcast.services import stream_create; "
            f"owner = User.objects.create_user({secrets.token_hex(6)!r}); "
            f"stream, key = stream_create(owner=owner, title={title!r}); "
            "print(stream.slug, stream.pk, key.secret)"
        )
        slug, stream_id, key = self.manage("shell", "-c", code).splitlines()[-1].split()
        return slug, stream_id, key

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.workdir.glob("*.log"))
        )


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    database = f"onair_cluster_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    workdir = tmp_path_factory.mktemp("cluster")
    env = app_environment(
        database_url=POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}",
        REDIS_URL=REDIS_URL,
        ONAIR_SFU_MODE="cluster",
        ONAIR_SFU_MAX_VIEWERS_PER_WORKER=str(MAX_VIEWERS_PER_WORKER),
        RECORDINGS_ROOT=str(workdir / "recordings"),
        ONAIR_RECORDING_SPOOL_DIR=str(workdir / "recording-spool"),
        # posters, taken by the origin worker and served by any daphne
        THUMBNAILS_ROOT=str(workdir / "thumbnails"),
        ONAIR_THUMBNAIL_SECONDS="10",
        ONAIR_METRICS_TOKEN=METRICS_TOKEN,
    )
    cluster = Cluster(env=env, workdir=workdir)
    env["ONAIR_REDIS_PREFIX"] = cluster.prefix  # this run's keys only: others may share Redis
    try:
        cluster.manage("migrate", "--noinput", "-v0")
        cluster.start_worker()
        cluster.start_worker()
        cluster.start_daphne()
        cluster.start_daphne()
        yield cluster
    finally:
        for process in cluster.processes:
            process.terminate()
        for process in cluster.processes:
            stop(process)
        logs = sorted(cluster.workdir.glob("*.log"))
        errors = [f"{log.name}: {e}" for log in logs for e in log_errors(log.read_text())]
        for key in cluster.redis.scan_iter(f"{cluster.prefix}*"):
            cluster.redis.delete(key)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    # Nothing any of them logged may be an ERROR, while stopping included (an e2e test also
    # fails as soon as its servers log one).
    assert errors == [], cluster.logs()
