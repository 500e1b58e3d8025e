"""A burst of concurrent writes against a real server: daphne in a subprocess on the
embedded default (a SQLite file) and on PostgreSQL (a database of its own, created and
dropped; skipped, saying why, when the server at 127.0.0.1:5432 is down).

A real aiortc publisher goes live over WHIP; then 50 WHEP viewers join with 16 requests in
flight while the owner changes the title through the API and a watch page's WebSocket joins,
and the 50 leave the same way. No response may be a 5xx, and every viewer is counted
exactly once: the stream's counter, its peak and its ``ViewerSession`` rows agree.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import websockets

from onair.environment import app_environment
from testpeers import TestPublisher, TestViewer, wait_until
from tests.daphne import ROOT, Response, daphne_process, http_request, manage
from tests.signaling.http_clients import SDP

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
VIEWERS = 50
IN_FLIGHT = 16
TITLE_CHANGES = 5

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _postgres_down() -> str | None:
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}".strip()
    return None


POSTGRES_DOWN = _postgres_down()


@dataclass
class Server:
    engine: str
    base_url: str
    env: dict[str, str]
    log_path: Path
    shell: DjangoShell
    # One thread per request in flight: asyncio's default executor has too few on 2 cores.
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(IN_FLIGHT + 4))
    statuses: list[tuple[str, int]] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)  # by "POST whep" etc.

    def query(self, code: str) -> Any:
        """Run ``code`` (which sets ``result``) in the server's database; returns ``result``."""
        return self.shell.run(code)

    async def http(
        self, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
    ) -> Response:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        response = await loop.run_in_executor(
            self.pool, _send, method, self.base_url + path, body, headers or {}
        )
        kind = f"{method} {path.split('/')[1]}"
        self.seconds.setdefault(kind, []).append(time.monotonic() - started)
        self.statuses.append((f"{method} {path}", response.status))
        return response

    def report(self, kind: str) -> str:
        """How long each ``kind`` of request took, for docs/SECURITY.md (never asserted)."""
        times = sorted(self.seconds[kind])
        return (
            f"{kind}: {len(times)} requests, median {statistics.median(times) * 1000:.0f} ms, "
            f"slowest {times[-1] * 1000:.0f} ms"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class DjangoShell:
    """One ``manage.py shell`` that runs each query it is sent: Django starts once for the
    test (≈ 1.5 s on 2 busy cores), not once per query."""

    PROGRAM = (
        "import json, sys\n"
        "for line in sys.stdin:\n"
        "    scope = {}\n"
        "    exec(json.loads(line), scope)\n"
        "    print('result ' + json.dumps(scope['result']), flush=True)\n"
    )

    def __init__(self, env: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", self.PROGRAM],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, code: str) -> Any:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps(code) + "\n")
            self._process.stdin.flush()
            for line in self._process.stdout:
                if line.startswith("result "):
                    return json.loads(line.removeprefix("result "))
        raise RuntimeError(f"manage.py shell exited ({self._process.wait()}) running:\n{code}")

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _send(method: str, url: str, body: str, headers: dict[str, str]) -> Response:
    return http_request(method, url, body, headers, timeout=60)


def _serve(engine: str, workdir: Path, database_url: str) -> Iterator[Server]:
    env = app_environment(
        database_url=database_url,
        # Every peer comes from 127.0.0.1: lift the per-address and per-stream caps, and
        # give connections on a busy machine time.
        ONAIR_MAX_SESSIONS_PER_ADDRESS="1000",
        ONAIR_MAX_VIEWERS_PER_STREAM="1000",
        ONAIR_CONNECT_TIMEOUT_SECONDS="120",
    )
    manage(env, "migrate", "--noinput", "-v0")
    shell = DjangoShell(env)
    try:
        with daphne_process(env, workdir / "daphne.log") as daphne:
            server = Server(engine, daphne.base_url, env, daphne.log_path, shell)
            try:
                yield server
            finally:
                server.pool.shutdown(wait=False, cancel_futures=True)
    finally:
        shell.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(POSTGRES_DOWN is not None, reason=str(POSTGRES_DOWN)),
            ],
        ),
    ]
)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "sqlite":
        yield from _serve("SQLite", tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}")
        return
    database = f"onair_burst_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    try:
        yield from _serve("PostgreSQL", tmp_path, POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}")
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _new_streams(server: Server) -> tuple[tuple[str, str], tuple[str, str], str]:
    """Two public streams of one owner, as (slug, key), and the owner's API token."""
    burst, other, token = server.query(
        "from django.contrib.auth.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        "from broadcast.services import stream_create\n"
        "owner = User.objects.create_user('owner')\n"
        "made = [stream_create(owner=owner, title=title) for title in ('Burst', 'Other')]\n"
        "token = Token.objects.create(user=owner).key\n"
        "result = [[s.slug, k.secret] for s, k in made] + [token]"
    )
    return tuple(burst), tuple(other), token


def _state(server: Server, slug: str) -> str:
    return str(
        server.query(
            f"from broadcast.models import Stream\nresult = Stream.objects.get(slug={slug!r}).state"
        )
    )


def _counts(server: Server, slug: str) -> dict[str, int]:
    """The stream's counters and its viewer rows, straight from the database."""
    return dict(
        server.query(
            "from broadcast.models import Stream\n"
            f"stream = Stream.objects.get(slug={slug!r})\n"
            "sessions = stream.viewer_sessions\n"
            "result = {'viewers': stream.viewer_count, 'peak': stream.peak_viewer_count,"
            " 'rows': sessions.count(), 'open': sessions.filter(ended_at__isnull=True).count(),"
            " 'whep': sessions.filter(kind='whep').count()}"
        )
    )


async def _settled_counts(
    server: Server, slug: str, expected: dict[str, int], within: float
) -> dict[str, int]:
    """``_counts`` once it equals ``expected``, or as it is after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        counts = await asyncio.to_thread(_counts, server, slug)
        if counts == expected or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.5)


async def _cheap_viewer() -> tuple[TestViewer, str]:
    """A WHEP player that receives video only and counts packets without decoding them."""
    viewer = TestViewer(decode=False)
    viewer.pc.addTransceiver("video", direction="recvonly")
    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
    return viewer, str(viewer.pc.localDescription.sdp)


async def _publish(server: Server, slug: str, key: str, publisher: TestPublisher) -> Response:
    """Go live over WHIP with the stream key."""
    response = await server.http(
        "POST",
        f"/whip/{slug}",
        await publisher.create_offer(),
        {"Authorization": f"Bearer {key}", "Content-Type": SDP},
    )
    if response.status == 201:
        await publisher.accept_answer(response.body)
    return response


async def _watch_page(server: Server, slug: str, viewer: TestViewer) -> Any:
    """The watch page's WebSocket: welcome, watch, the server's offer, the page's answer."""
    ws = await websockets.connect(
        server.base_url.replace("http://", "ws://") + f"/ws/watch/{slug}/",
        origin=server.base_url,  # type: ignore[arg-type]
    )
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert message["type"] != "error", message
        if message["type"] == "welcome":
            await ws.send(json.dumps({"type": "watch"}))
        if message["type"] == "offer":
            break
    await ws.send(json.dumps({"type": "answer", "sdp": await viewer.answer(message["sdp"])}))
    return ws


async def test_a_burst_of_joins_title_changes_and_leaves_gets_no_5xx_and_exact_counts(
    server: Server,
) -> None:
    (slug, key), (other_slug, other_key), token = _new_streams(server)
    owner = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    publisher, other_publisher = TestPublisher(fps=10), TestPublisher(fps=10)
    viewers: list[TestViewer] = []
    page_viewer = TestViewer(decode=False)
    page: Any = None
    gate = asyncio.Semaphore(IN_FLIGHT)
    try:
        published = await _publish(server, slug, key, publisher)
        assert published.status == 201, (published, server.log())

        offers = [await _cheap_viewer() for _ in range(VIEWERS)]
        viewers = [viewer for viewer, _ in offers]

        async def join(viewer: TestViewer, offer: str) -> Response:
            async with gate:
                response = await server.http("POST", f"/whep/{slug}", offer, {"Content-Type": SDP})
            if response.status == 201:
                await viewer.accept_answer(response.body)
            return response

        async def retitle() -> list[Response]:
            answers = []
            for index in range(TITLE_CHANGES):
                await asyncio.sleep(0.2)
                body = json.dumps({"title": f"Burst, take {index}"})
                answers.append(await server.http("PATCH", f"/api/v1/streams/{slug}/", body, owner))
            return answers

        async def watch() -> Any:
            await asyncio.sleep(0.3)
            return await _watch_page(server, slug, page_viewer)

        async def publish_other() -> Response:  # another broadcast goes live meanwhile
            await asyncio.sleep(0.1)
            return await _publish(server, other_slug, other_key, other_publisher)

        burst_started = time.monotonic()
        joined, titled, page, other = await asyncio.gather(
            asyncio.gather(*(join(viewer, offer) for viewer, offer in offers)),
            retitle(),
            watch(),
            publish_other(),
        )
        print(
            f"\n{server.engine}: burst of {VIEWERS} joins ({IN_FLIGHT} in flight) over "
            f"{time.monotonic() - burst_started:.1f} s; {server.report('POST whep')}"
            f"; {server.report('PATCH api')}"
        )
        server_errors = [(what, status) for what, status in server.statuses if status >= 500]
        assert not server_errors, (server_errors, server.log()[-5000:])
        assert [r.status for r in joined] == [201] * VIEWERS, [r.body for r in joined]
        assert [r.status for r in titled] == [200] * TITLE_CHANGES, [r.body for r in titled]
        assert other.status == 201, other

        everyone = [*viewers, page_viewer]
        assert await wait_until(
            lambda: all(v.pc.connectionState == "connected" for v in everyone), 120
        ), [v.pc.connectionState for v in everyone]
        watching = VIEWERS + 1
        assert await wait_until(lambda: all(v.video.packets for v in everyone), 60)
        all_in = {
            "viewers": watching,
            "peak": watching,
            "rows": watching,
            "open": watching,
            "whep": VIEWERS,
        }
        counted = await _settled_counts(server, slug, all_in, 30)
        assert counted == all_in, server.log()[-5000:]
        detail = await server.http("GET", f"/api/v1/streams/{slug}/", headers=owner)
        assert json.loads(detail.body)["title"] == f"Burst, take {TITLE_CHANGES - 1}"

        # The same crowd leaves as it came, while the other broadcast ends: every DELETE
        # answered, every viewer uncounted once.
        async def leave(response: Response) -> Response:
            async with gate:
                return await server.http("DELETE", response.headers["Location"])

        left, ended = await asyncio.gather(
            asyncio.gather(*(leave(response) for response in joined)),
            leave(other),
        )
        assert ended.status == 200, ended
        print(f"{server.engine}: {server.report('DELETE whep')}")
        assert [r.status for r in left] == [200] * VIEWERS, [r.body for r in left]
        await page.close()
        page = None
        closed = {"viewers": 0, "peak": watching, "rows": watching, "open": 0, "whep": VIEWERS}
        counted = await _settled_counts(server, slug, closed, 60)
        assert counted == closed, server.log()[-5000:]
        assert not [status for _, status in server.statuses if status >= 500]
        assert " ERROR " not in server.log(), server.log()[-5000:]
        assert await asyncio.to_thread(_state, server, other_slug) == "ended"
    finally:
        if page is not None:
            await page.close()
        for viewer in [*viewers, page_viewer]:
            await viewer.close()
        await publisher.close()
        await other_publisher.close()
