"""``LOG_FORMAT=json``: every line a server logs is one JSON object, and one viewer's join can
be followed through them by its session id, from the WHEP request to the SFU's viewer and
its connection: in one process, and in cluster mode across the gateway into the ``runsfu``
worker that serves it (whose lines carry its worker id too). The session id is public: not
the WHEP session's token."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from onair.environment import app_environment
from testpeers import TestPublisher, TestViewer, wait_until
from tests.cluster import CLUSTER_SKIP, POSTGRES_URL, REDIS_URL, Cluster, http, stop
from tests.daphne import ROOT, log_errors
from tests.e2e.conftest import running_server
from tests.signaling.test_sfu_cluster import Watcher

pytestmark = pytest.mark.slow

JSON_LOGS = {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def _broadcast_and_watch(base_url: str, slug: str, key: str, watch_page: bool = False) -> str:
    """A WHIP publisher and a WHEP viewer decoding it (and a watch page's, over its
    WebSocket, with ``watch_page``); the WHEP viewer's session URL."""
    publisher, viewer = TestPublisher(), TestViewer()
    watcher = Watcher(base_url, slug)
    try:
        published = await http(
            "POST",
            f"{base_url}/whip/{slug}",
            await publisher.create_offer(),
            {"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
        )
        assert published.status == 201, published
        await publisher.accept_answer(published.body)
        watched = await http(
            "POST",
            f"{base_url}/whep/{slug}",
            await viewer.create_offer(),
            {"Content-Type": "application/sdp"},
        )
        assert watched.status == 201, watched
        await viewer.accept_answer(watched.body)
        assert await viewer.wait_for_frames(video=10, within=15)
        if watch_page:
            await watcher.open()
            await watcher.send("watch")
            await watcher.expect("offer")
            assert await wait_until(lambda: watcher.frames >= 10, 15)
        ended = await http("DELETE", base_url + watched.headers["Location"])
        assert ended.status == 200, ended
        return watched.headers["Location"]
    finally:
        await watcher.close()
        await viewer.close()
        await publisher.close()
        await asyncio.sleep(0.5)  # their ends logged


def _follow_the_viewer(records: list[dict[str, Any]], slug: str) -> list[dict[str, Any]]:
    """The lines of the one WHEP viewer's session, found by its first line."""
    started = [
        r for r in records if r["message"] == "whep session started" and r.get("stream") == slug
    ]
    assert len(started) == 1, records
    session = started[0]["session"]
    assert session.startswith("whep-")
    return [r for r in records if r.get("session") == session]


def test_one_viewers_join_is_followed_by_its_session_id(tmp_path: Path) -> None:
    with running_server(tmp_path, **JSON_LOGS) as server:
        session_url = asyncio.run(
            _broadcast_and_watch(server.base_url, server.demo_slug, server.demo_stream_key)
        )
    log = server.log()
    lines = log.splitlines()
    records = [json.loads(line) for line in lines]  # every line: access log, daphne's own
    assert log_errors(log) == []
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    viewer = _follow_the_viewer(records, server.demo_slug)
    said = [(r["logger"], r["message"]) for r in viewer]
    assert ("signaling.http_sessions", "whep session started") in said, said
    assert ("sfu.router", "viewer joined") in said, said
    assert ("sfu.peer", "peer connected") in said, said
    assert all(r["stream"] == server.demo_slug for r in viewer)
    # The SFU's viewer is the one the session's lines name.
    joined = next(r for r in viewer if r["message"] == "viewer joined")
    connected = next(r for r in viewer if r["message"] == "peer connected")
    assert connected["peer_id"] == joined["viewer_id"]
    assert connected["peer"] == "ViewerPeer"
    # The access log's lines of its POST and of its DELETE (the session's own URL, redacted)
    access = {r["message"] for r in viewer if r["logger"] == "onair.access"}
    assert access == {"POST /whep/demo", "DELETE /whep/demo/<token>"}, viewer
    token = session_url.rsplit("/", 1)[1]
    assert token not in log
    assert viewer[0]["session"] not in session_url


@pytest.fixture
def json_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A daphne and a ``runsfu`` worker logging JSON, on a fresh database."""
    database = f"onair_json_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    cluster = Cluster(
        env=app_environment(
            database_url=POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}",
            REDIS_URL=REDIS_URL,
            ONAIR_SFU_MODE="cluster",
            **JSON_LOGS,
        ),
        workdir=tmp_path,
    )
    cluster.env["ONAIR_REDIS_PREFIX"] = cluster.prefix
    try:
        cluster.manage("migrate", "--noinput", "-v0")
        cluster.start_worker()
        cluster.start_daphne()
        yield cluster
    finally:
        for process in cluster.processes:
            stop(process)
        for key in cluster.redis.scan_iter(f"{cluster.prefix}*"):
            cluster.redis.delete(key)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.mark.postgres
@pytest.mark.redis
@CLUSTER_SKIP
def test_in_cluster_mode_the_workers_lines_carry_the_viewers_session(
    json_cluster: Cluster,
) -> None:
    cluster = json_cluster
    slug, _, key = cluster.new_stream("JSON logs")
    asyncio.run(_broadcast_and_watch(cluster.daphne[0], slug, key, watch_page=True))
    for process in cluster.processes:
        stop(process)
    daphne_log = next(cluster.workdir.glob("daphne-*.log")).read_text()
    worker_log = next(cluster.workdir.glob("runsfu-*.log")).read_text()
    assert log_errors(daphne_log) == [], daphne_log
    assert log_errors(worker_log) == [], worker_log
    daphne_records, worker_records = _records(daphne_log), _records(worker_log)
    viewer = _follow_the_viewer(daphne_records + worker_records, slug)
    said = [(r["logger"], r["message"]) for r in viewer]
    assert ("signaling.http_sessions", "whep session started") in said, said
    in_worker = [r for r in viewer if r in worker_records]
    assert ("sfu.router", "viewer joined") in [(r["logger"], r["message"]) for r in in_worker]
    assert ("sfu.peer", "peer connected") in [(r["logger"], r["message"]) for r in in_worker]
    worker_ids = {r.get("worker") for r in in_worker}
    assert len(worker_ids) == 1
    assert next(iter(worker_ids), "").startswith("w")
    # The watch page's viewer, from its WebSocket's lines to the worker's.
    offered = [r for r in daphne_records if r["message"] == "viewer offered"]
    assert len(offered) == 1, offered
    page_session = offered[0]["session"]
    assert page_session.startswith("ws-viewer-")
    page_lines = [r for r in worker_records if r.get("session") == page_session]
    joined = [r for r in page_lines if r["message"] == "viewer joined"]
    assert len(joined) == 1, page_lines
    # the session id the page's gateway holds: the worker's id and the SFU's viewer's
    assert offered[0]["viewer_id"] == f"{joined[0]['worker']}.{joined[0]['viewer_id']}"
    assert any(r["message"] == "peer connected" for r in page_lines), page_lines


def test_an_unknown_log_format_stops_the_server_as_it_starts(tmp_path: Path) -> None:
    env = app_environment(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", LOG_FORMAT="xml")
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert checked.returncode != 0
    assert "LOG_FORMAT must be one of plain, json." in checked.stderr
