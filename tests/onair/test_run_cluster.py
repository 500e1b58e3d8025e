"""``make run-cluster`` as an operator runs it, stopped as they stop it (Ctrl-C, SIGTERM to the
process group): the stop is clean (no ``make: *** … Error`` line, every process exits 0) and
leaves no worker and no broadcast origin behind in Redis, so the next start announces none
of the previous run's workers as dead."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from testpeers import TestPublisher, wait_until
from tests.cluster import CLUSTER_SKIP, POSTGRES_URL
from tests.daphne import ROOT, free_port, http_request, log_errors

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, CLUSTER_SKIP]

MAKEFILE_REDIS_URL = "redis://127.0.0.1:6379/0"  # the Makefile's; this run's keys: its prefix


def _free_port_pair() -> int:
    """A port whose next one is free too (daphne listens on PORT and PORT + 1)."""
    while True:
        port = free_port()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/", timeout=1)
        except OSError as error:
            if "refused" in str(error).lower():
                return port


class MakeRunCluster:
    def __init__(self, workdir: Path, database: str, prefix: str) -> None:
        self.port = _free_port_pair()
        # Not a .log: its start banner shows the demo stream key, as it does for the operator.
        self.log_path = workdir / f"make-{self.port}.out"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MAKELEVEL", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            ONAIR_REDIS_PREFIX=prefix,
            RECORDINGS_ROOT=str(workdir / "recordings"),
            ONAIR_RECORDING_SPOOL_DIR=str(workdir / "spool"),
            THUMBNAILS_ROOT=str(workdir / "thumbnails"),
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "run-cluster", f"PORT={self.port}",
                 f"CLUSTER_DATABASE={database}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal's job
                # Ctrl-C reaches a terminal's job: not ignored, as it is under `&`
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, redis_client: redis.Redis, prefix: str) -> None:
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            try:
                for port in (self.port, self.port + 1):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except OSError:
                time.sleep(0.3)
                continue
            if redis_client.scard(f"{prefix}:sfu:workers") == 2:
                return
            time.sleep(0.3)

    def signal_group(self, signum: int) -> int:
        os.killpg(self.process.pid, signum)
        return self.process.wait(timeout=30)


@pytest.fixture
def cluster_run(tmp_path: Path) -> Iterator[tuple[Path, str, str, redis.Redis]]:
    database = f"onair_make_{secrets.token_hex(4)}"
    prefix = f"onair-test-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(MAKEFILE_REDIS_URL)
    try:
        yield tmp_path, database, prefix, client
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _directory(client: redis.Redis, prefix: str) -> dict[str, object]:
    keys = f"{prefix}:sfu:"
    return {
        "workers": sorted(client.smembers(f"{keys}workers")),
        "worker records": sorted(
            k for k in client.scan_iter(f"{keys}worker:*") if k.count(b":") == 3
        ),
        "origins": sorted(client.scan_iter(f"{keys}origin:*")),
    }


async def test_a_clean_stop_exits_0_and_leaves_no_worker_behind(
    cluster_run: tuple[Path, str, str, redis.Redis],
) -> None:
    workdir, database, prefix, client = cluster_run
    first = MakeRunCluster(workdir, database, prefix)
    publisher = TestPublisher()
    try:
        first.wait_serving(client, prefix)
        key = re.search(r"Stream key\s+(sk_\S+)", first.log())
        assert key, first.log()
        # A broadcast, so that a worker is its origin when the cluster stops.
        published = await asyncio.to_thread(
            http_request,
            "POST",
            f"http://127.0.0.1:{first.port}/whip/demo",
            await publisher.create_offer(),
            {"Authorization": f"Bearer {key[1]}", "Content-Type": "application/sdp"},
            timeout=30,
        )
        assert published.status == 201, (published, first.log())
        await publisher.accept_answer(published.body)
        assert await wait_until(lambda: publisher.pc.connectionState == "connected", 15)
        assert list(client.scan_iter(f"{prefix}:sfu:origin:*")), first.log()

        status = first.signal_group(signal.SIGINT)  # Ctrl-C
    finally:
        await publisher.close()
        if first.process.poll() is None:
            first.signal_group(signal.SIGKILL)
    log = first.log()
    # make itself got the SIGINT too, and dies of it (130); its recipe exited 0.
    assert status == -signal.SIGINT, log
    assert "***" not in log, log
    assert "Error" not in log, log
    assert log_errors(log) == [], log
    assert _directory(client, prefix) == {"workers": [], "worker records": [], "origins": []}
    # The broadcast's origin is listed as left: the next start moves its pages (none here).
    assert client.scard(f"{prefix}:sfu:left") == 1

    second = MakeRunCluster(workdir, database, prefix)
    try:
        second.wait_serving(client, prefix)
        await asyncio.sleep(2)  # a few heartbeats, in which a worker announces the dead it finds
        # A worker starting took the left one (it would have moved its pages).
        assert not client.exists(f"{prefix}:sfu:left"), second.log()
        status = second.signal_group(signal.SIGTERM)
    finally:
        if second.process.poll() is None:
            second.signal_group(signal.SIGKILL)
    log = second.log()
    assert " gone " not in log, log  # no "sfu worker … gone" for the previous run's workers
    assert status == -signal.SIGTERM, log
    assert "***" not in log, log
    assert "Error" not in log, log
    assert log_errors(log) == [], log
    assert _directory(client, prefix) == {"workers": [], "worker records": [], "origins": []}
    assert not client.exists(f"{prefix}:sfu:left")
    assert list(client.scan_iter(f"{prefix}:sfu:worker:*")) == []
