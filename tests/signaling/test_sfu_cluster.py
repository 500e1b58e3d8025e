"""Cluster mode end to end, with real processes: two daphne and two ``runsfu`` workers on
PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379), driven over WebSockets (and WHEP
over HTTP) by aiortc peers that decode what they get. The per-worker viewer cap is 2, so
four viewers need an edge worker piped from the origin.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from signaling.gateway.directory import WorkerInfo
from testpeers import TestPublisher, TestViewer, wait_until, wait_until_awaited
from tests.cluster import (
    CLUSTER_SKIP,
    MAX_VIEWERS_PER_WORKER,
    METRICS_TOKEN,
    Cluster,
    cluster_fixture,  # noqa: F401 (provides the "cluster" fixture)
    http,
)
from tests.daphne import log_errors
from tests.signaling.http_clients import SDP

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, CLUSTER_SKIP]


# --- WebSocket clients that behave like the studio and watch pages -------------------------


class _Page:
    def __init__(self, base_url: str, path: str) -> None:
        self.url = base_url.replace("http://", "ws://") + path
        self.origin = base_url
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, origin=self.origin)  # type: ignore[arg-type]
        self._reader = asyncio.ensure_future(self._read())

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def expect(self, kind: str, within: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        seen = []
        while True:
            try:
                message = await asyncio.wait_for(self.messages.get(), deadline - time.monotonic())
            except TimeoutError:
                raise AssertionError(f"no {kind!r} from {self.url}; got {seen}") from None
            if message["type"] == kind:
                return message
            assert message["type"] != "error", message
            seen.append(message["type"])

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def _read(self) -> None:
        async for raw in self.ws:
            await self.handle(json.loads(raw))

    async def handle(self, message: dict[str, Any]) -> None:
        await self.messages.put(message)


class Studio(_Page):
    def __init__(self, base_url: str, slug: str) -> None:
        super().__init__(base_url, f"/ws/studio/{slug}/")
        self.publisher = TestPublisher()

    async def go_live(self, key: str) -> None:
        await self.open()
        await self.expect("welcome")
        await self.send("auth", key=key)
        await self.expect("state")
        await self.send("offer", sdp=await self.publisher.create_offer())
        answer = await self.expect("answer")
        await self.publisher.accept_answer(answer["sdp"])

    async def close(self) -> None:
        await super().close()
        await self.publisher.close()

    async def close_socket(self) -> None:
        """Close the WebSocket only: the publisher's peer connection goes on sending."""
        await _Page.close(self)


class Watcher(_Page):
    """The watch page: answers every offer with a new peer connection, as watch.js does."""

    def __init__(self, base_url: str, slug: str) -> None:
        super().__init__(base_url, f"/ws/watch/{slug}/")
        self.viewer: TestViewer | None = None
        self.offers: list[float] = []
        self.counts: list[int] = []
        self.publisher_statuses: list[str] = []
        self._frames_before = 0

    @property
    def frames(self) -> int:
        return self._frames_before + (self.viewer.video.frames if self.viewer else 0)

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "offer":
            self.offers.append(time.monotonic())
            previous, self.viewer = self.viewer, TestViewer()
            await self.send("answer", sdp=await self.viewer.answer(message["sdp"]))
            if previous is not None:
                self._frames_before += previous.video.frames
                await previous.close()
        elif kind == "viewers":
            self.counts.append(message["count"])
        elif kind == "publisher":
            self.publisher_statuses.append(message["status"])
        await super().handle(message)

    async def close(self) -> None:
        await super().close()
        if self.viewer is not None:
            await self.viewer.close()


async def _watchers(base_urls: list[str], slug: str) -> list[Watcher]:
    watchers = []
    for base_url in base_urls:
        watcher = Watcher(base_url, slug)
        await watcher.open()
        await watcher.send("watch")
        await watcher.expect("offer")
        watchers.append(watcher)
    return watchers


async def _welcome(base_url: str, slug: str) -> dict[str, Any]:
    """What a watch page connecting now to ``base_url`` is told about the stream."""
    async with websockets.connect(
        base_url.replace("http://", "ws://") + f"/ws/watch/{slug}/",
        origin=base_url,  # type: ignore[arg-type]
    ) as ws:
        welcome = json.loads(await ws.recv())
    return welcome


def _placement(cluster: Cluster, stream_id: str) -> tuple[WorkerInfo, WorkerInfo]:
    """(origin, edge) of a stream."""
    workers = cluster.workers()
    origin = next(w for w in workers if stream_id in w.producers)
    edge = next(w for w in workers if stream_id in w.pipes_in)
    return origin, edge


async def test_viewers_fill_both_workers_and_the_edge_gets_each_packet_once(
    cluster: Cluster,
) -> None:
    daphne_a, daphne_b = cluster.daphne
    slug, stream_id, key = cluster.new_stream("Cluster one")
    studio = Studio(daphne_a, slug)
    watchers: list[Watcher] = []
    try:
        await studio.go_live(key)
        watchers = await _watchers([daphne_b] * 4, slug)
        decoded = await asyncio.gather(
            *(w.viewer.wait_for_frames(video=30, within=15) for w in watchers if w.viewer)
        )
        assert all(decoded), ([w.frames for w in watchers], cluster.workers())
        assert await wait_until(lambda: sum(w.viewers for w in cluster.workers()) == 4, 3)
        origin, edge = _placement(cluster, stream_id)
        assert (origin.viewers, edge.viewers) == (MAX_VIEWERS_PER_WORKER, MAX_VIEWERS_PER_WORKER)
        assert list(origin.pipes_out[stream_id]) == [edge.id]  # one pipe for both edge viewers

        await asyncio.sleep(2)
        await studio.publisher.close()  # the flow stops: the counters settle
        await asyncio.sleep(1.5)
        origin, edge = _placement(cluster, stream_id)
        sent = origin.pipes_out[stream_id][edge.id]
        received = edge.pipes_in[stream_id]
        print(
            f"\norigin received {origin.producers[stream_id]} packets from the publisher, "
            f"piped {sent['packets']} (+{sent['retransmitted']} repairs) to the edge; "
            f"edge received {received['packets']}, duplicates {received['duplicates']}"
        )
        assert received["packets"] == sent["packets"] > 200
        assert received["duplicates"] == 0
        assert sent["packets"] <= origin.producers[stream_id]

        # Ending the broadcast through daphne A closes its routers on both workers.
        await studio.send("end")
        assert (await watchers[0].expect("state"))["stream"]["state"] == "ended"
        assert await wait_until(
            lambda: (
                not any(
                    stream_id in w.producers or stream_id in w.pipes_in for w in cluster.workers()
                )
            ),
            3,
        )
    finally:
        for watcher in watchers:
            await watcher.close()
        await studio.close()


async def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await http("GET", url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status == 200, response
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.body)
        for sample in family.samples
    }


async def test_each_worker_and_each_daphne_serve_their_own_metrics(cluster: Cluster) -> None:
    """docs/METRICS.md: every process is a scrape target; the SFU's metrics are the
    workers', a stream's viewers the sum of its origin's and its edge's."""
    daphne_a, daphne_b = cluster.daphne
    slug, stream_id, key = cluster.new_stream("Cluster metrics")
    studio = Studio(daphne_a, slug)
    watchers: list[Watcher] = []
    try:
        await studio.go_live(key)
        watchers = await _watchers([daphne_b] * 3, slug)
        for watcher in watchers:
            assert watcher.viewer is not None
            assert await watcher.viewer.wait_for_frames(video=20, within=15)
        origin, edge = _placement(cluster, stream_id)
        urls = {"origin": cluster.metrics[origin.pid], "edge": cluster.metrics[edge.pid]}
        first = {process: await _scrape(url) for process, url in urls.items()}
        await asyncio.sleep(1)
        then = {process: await _scrape(url) for process, url in urls.items()}

        def value(process: str, name: str, **labels: str) -> float:
            return then[process].get((name, frozenset(labels.items())), 0.0)

        assert value("origin", "onair_sfu_live_streams") >= 1
        assert value("origin", "onair_sfu_streams", role="origin") >= 1
        assert value("edge", "onair_sfu_streams", role="edge") >= 1
        assert value("origin", "onair_sfu_viewers", stream=stream_id) == MAX_VIEWERS_PER_WORKER
        assert value("edge", "onair_sfu_viewers", stream=stream_id) == 3 - MAX_VIEWERS_PER_WORKER
        forwarded = ("onair_sfu_forwarded_packets_total", frozenset({("kind", "video")}))
        for process in urls:
            assert then[process][forwarded] > first[process][forwarded] > 0, process
        # The workers' listeners are closed without the token, and serve /metrics only.
        refused = await http("GET", urls["edge"])
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert (await http("GET", urls["edge"].replace("/metrics", "/"))).status == 404

        # daphne in cluster mode: its signaling, no SFU of its own.
        web = await _scrape(f"{daphne_b}/metrics")
        watch_key = frozenset({("endpoint", "watch"), ("type", "watch")})
        assert web[("onair_signaling_messages_total", watch_key)] >= 3
        assert not [name for name, _ in web if name.startswith("onair_sfu_")]
        assert (await http("GET", f"{daphne_b}/metrics")).status == 401
    finally:
        for watcher in watchers:
            await watcher.close()
        await studio.close()


async def test_killing_the_edge_moves_its_viewers_and_counts_stay_right(
    cluster: Cluster,
) -> None:
    daphne_a, daphne_b = cluster.daphne
    slug, stream_id, key = cluster.new_stream("Cluster two")
    studio = Studio(daphne_a, slug)
    watchers: list[Watcher] = []
    try:
        await studio.go_live(key)
        watchers = await _watchers([daphne_a, daphne_b, daphne_b, daphne_a], slug)
        assert all(
            await asyncio.gather(
                *(w.viewer.wait_for_frames(video=30, within=15) for w in watchers if w.viewer)
            )
        )
        assert await wait_until(lambda: sum(w.viewers for w in cluster.workers()) == 4, 3)
        _, edge = _placement(cluster, stream_id)
        assert await wait_until(lambda: all(w.counts[-1:] == [4] for w in watchers), 5)

        frames_at_kill = [w.frames for w in watchers]
        killed_at = time.monotonic()
        os.kill(edge.pid, signal.SIGKILL)
        samples: list[list[int]] = []
        while time.monotonic() < killed_at + 6:
            samples.append([w.frames for w in watchers])
            await asyncio.sleep(0.2)

        moved = [w for w in watchers if w.offers[-1] > killed_at]
        stayed = [w for w in watchers if w.offers[-1] < killed_at]
        assert len(moved) == MAX_VIEWERS_PER_WORKER, (
            [w.offers for w in watchers],
            killed_at,
            edge,
            cluster.workers(),
            cluster.logs(),
        )
        for watcher in moved:
            assert watcher.viewer is not None
            first = watcher.viewer.video.first_frame_at
            assert first is not None, "a moved viewer never decoded again"
            print(f"\nedge killed: viewer watching again after {first - killed_at:.2f} s")
            assert first - killed_at < 5.0
        for index, watcher in enumerate(watchers):
            if watcher in stayed:
                # never stalled: frames kept coming in every 1 s window after the kill
                counts = [sample[index] for sample in samples]
                assert all(
                    later > earlier for earlier, later in zip(counts, counts[5:], strict=False)
                ), counts
                assert counts[-1] > frames_at_kill[index]

        # The viewers moved, none left: every process says so. (A probe that never asks to
        # watch is never counted.)
        assert all(w.counts[-1] == 4 for w in watchers), [w.counts for w in watchers]
        seen = [len(w.counts) for w in watchers]
        for base_url in (daphne_a, daphne_b):
            welcome = await _welcome(base_url, slug)
            assert welcome["stream"]["state"] == "live"
            assert welcome["stream"]["viewers"] == 4
        await asyncio.sleep(1)
        assert all(w.counts[n:] == [] for w, n in zip(watchers, seen, strict=True))
    finally:
        for watcher in watchers:
            await watcher.close()
        await studio.close()


async def test_killing_the_origin_shows_reconnecting_and_viewers_resume_with_the_publisher(
    cluster: Cluster,
) -> None:
    while len(cluster.workers()) < 2:
        cluster.start_worker()
    daphne_a, daphne_b = cluster.daphne
    slug, stream_id, key = cluster.new_stream("Cluster three")
    studio = Studio(daphne_a, slug)
    watchers: list[Watcher] = []
    player: TestViewer | None = None
    try:
        await studio.go_live(key)
        player, on_origin = await _whep(daphne_a, slug)  # cut off with the origin
        watchers = await _watchers([daphne_b, daphne_a, daphne_b], slug)
        assert all(
            await asyncio.gather(
                *(w.viewer.wait_for_frames(video=20, within=15) for w in watchers if w.viewer),
                player.wait_for_frames(video=20, within=15),
            )
        )
        assert await wait_until(lambda: sum(w.viewers for w in cluster.workers()) == 4, 3)
        origin, _ = _placement(cluster, stream_id)
        assert _session_worker(cluster, on_origin) == origin.id
        await _count_becomes(cluster, slug, 4)

        killed_at = time.monotonic()
        os.kill(origin.pid, signal.SIGKILL)
        assert await wait_until(
            lambda: all("reconnecting" in w.publisher_statuses for w in watchers), 5
        ), [w.publisher_statuses for w in watchers]
        told = time.monotonic() - killed_at
        print(f"\norigin killed: viewers told 'reconnecting' after {told:.2f} s")
        await _count_becomes(cluster, slug, 3)  # the WHEP player it held is gone
        print(f"origin killed: viewer count right after {time.monotonic() - killed_at:.2f} s")
        assert await wait_until(lambda: all(w.offers[-1] > killed_at for w in watchers), 5)

        # The studio page is asked to publish again, and does: media resumes.
        await studio.expect("restart", within=5)
        await studio.publisher.close()
        studio.publisher = TestPublisher()
        republished_at = time.monotonic()
        await studio.send("offer", sdp=await studio.publisher.create_offer())
        answer = await studio.expect("answer")
        await studio.publisher.accept_answer(answer["sdp"])
        assert all(
            await asyncio.gather(
                *(w.viewer.wait_for_frames(video=20, within=10) for w in watchers if w.viewer)
            )
        ), [w.frames for w in watchers]
        resumed = max(w.viewer.video.first_frame_at or 0 for w in watchers if w.viewer)
        print(f"publisher back: every viewer decoding after {resumed - republished_at:.2f} s")
        assert await wait_until(
            lambda: all(w.publisher_statuses[-1] == "connected" for w in watchers), 5
        )
        welcome = await _welcome(daphne_b, slug)
        assert welcome["stream"]["state"] == "live"
        assert welcome["stream"]["viewers"] == 3
        assert await _public_counts(cluster, slug) == [3, 3]  # the pages counted once
    finally:
        if player is not None:
            await player.close()
        for watcher in watchers:
            await watcher.close()
        await studio.close()


async def _whep(base_url: str, slug: str) -> tuple[TestViewer, str]:
    """A WHEP player (an aiortc viewer) through ``base_url``: the viewer and its session."""
    viewer = TestViewer()
    watched = await http(
        "POST", f"{base_url}/whep/{slug}", await viewer.create_offer(), {"Content-Type": SDP}
    )
    assert watched.status == 201, watched
    await viewer.accept_answer(watched.body)
    return viewer, watched.headers["Location"]


def _session_worker(cluster: Cluster, location: str) -> str:
    """The id of the worker holding a WHIP/WHEP session's peer."""
    record = cluster.redis.get(f"{cluster.prefix}:sfu:http:{location.rsplit('/', 1)[1]}")
    assert record is not None, location
    return str(json.loads(record)["sfu_id"]).partition(".")[0]


async def _public_counts(cluster: Cluster, slug: str) -> list[int]:
    """The stream's viewer count as each daphne process's public live list has it."""
    counts = []
    for base_url in cluster.daphne:
        listed = json.loads((await http("GET", f"{base_url}/api/v1/live/")).body)["results"]
        counts += [stream["viewers"] for stream in listed if stream["slug"] == slug]
    return counts


async def _count_becomes(cluster: Cluster, slug: str, expected: int, within: float = 5) -> None:
    """Every daphne process's public count of the stream's viewers is ``expected`` in time."""

    async def counted() -> bool:
        return await _public_counts(cluster, slug) == [expected, expected]

    assert await wait_until_awaited(counted, within), await _public_counts(cluster, slug)


async def test_killing_a_worker_uncounts_its_whep_viewers_and_counts_watch_pages_once(
    cluster: Cluster,
) -> None:
    """WHEP players cut off by a dead worker leave (their late DELETE answers 200, a new
    POST counts them again); watch pages on it move and stay counted once."""
    while len(cluster.workers()) < 2:
        cluster.start_worker()
    daphne_a, daphne_b = cluster.daphne
    slug, stream_id, key = cluster.new_stream("Cluster four")
    studio = Studio(daphne_a, slug)
    watchers: list[Watcher] = []
    players: list[TestViewer] = []

    try:
        await studio.go_live(key)
        # The origin takes the first two viewers, the edge the next two.
        watchers += await _watchers([daphne_a], slug)
        player, on_origin = await _whep(daphne_b, slug)
        players.append(player)
        watchers += await _watchers([daphne_b], slug)
        player, on_edge = await _whep(daphne_a, slug)
        players.append(player)
        viewers = [*players, *(w.viewer for w in watchers if w.viewer)]
        assert all(await asyncio.gather(*(v.wait_for_frames(video=20, within=15) for v in viewers)))
        await _count_becomes(cluster, slug, 4)
        origin, edge = _placement(cluster, stream_id)
        assert (_session_worker(cluster, on_origin), _session_worker(cluster, on_edge)) == (
            origin.id,
            edge.id,
        )

        killed_at = time.monotonic()
        os.kill(edge.pid, signal.SIGKILL)
        # The edge's WHEP player is gone; its watch page is moved, still counted.
        await _count_becomes(cluster, slug, 3)
        print(f"\nworker killed: viewer count right after {time.monotonic() - killed_at:.2f} s")
        moved = watchers[1]
        assert await wait_until(lambda: bool(moved.offers) and moved.offers[-1] > killed_at, 5)
        assert moved.viewer is not None
        assert await moved.viewer.wait_for_frames(video=10, within=10)
        await asyncio.sleep(1)  # its connection is up: counted again would show now
        assert await _public_counts(cluster, slug) == [3, 3]
        assert all(w.counts[-1] == 3 for w in watchers), [w.counts for w in watchers]

        # The cut-off player deletes its session late, and comes back with a new POST.
        assert (await http("DELETE", daphne_b + on_edge)).status == 200
        assert (await http("DELETE", daphne_b + on_edge)).status == 404
        assert await _public_counts(cluster, slug) == [3, 3]
        player, _ = await _whep(daphne_b, slug)
        players.append(player)
        assert await player.wait_for_frames(video=10, within=10)
        await _count_becomes(cluster, slug, 4)
    finally:
        for viewer in players:
            await viewer.close()
        for watcher in watchers:
            await watcher.close()
        await studio.close()


async def test_a_studio_on_another_daphne_takes_over_and_the_first_is_told(
    cluster: Cluster,
) -> None:
    """The SFU worker reports the replaced publisher; the studio holding it, on another
    daphne process, hears it (its session id is the worker's, qualified)."""
    daphne_a, daphne_b = cluster.daphne
    slug, _, key = cluster.new_stream("Cluster takeover")
    first, second = Studio(daphne_a, slug), Studio(daphne_b, slug)
    watchers: list[Watcher] = []
    try:
        await first.go_live(key)
        watchers = await _watchers([daphne_a], slug)
        assert watchers[0].viewer is not None
        assert await watchers[0].viewer.wait_for_frames(video=10, within=15)

        await second.go_live(key)

        assert "another tab or device" in (await first.expect("replaced"))["message"]
        frames = watchers[0].frames
        assert await wait_until(lambda: watchers[0].frames > frames + 15, 10)
    finally:
        for page in (first, second, *watchers):
            await page.close()


async def test_the_broadcasters_media_state_reaches_the_viewers_of_another_daphne(
    cluster: Cluster,
) -> None:
    """A studio on one daphne mutes its microphone and turns its camera off: a watch page on
    the other hears it (the channel layer), and one that connects there later is told in
    its welcome (the database)."""
    daphne_a, daphne_b = cluster.daphne
    slug, _, key = cluster.new_stream("Cluster media")
    studio = Studio(daphne_a, slug)
    watcher = Watcher(daphne_b, slug)
    try:
        await studio.go_live(key)
        await watcher.open()
        assert (await watcher.expect("welcome"))["stream"]["media"] == {
            "mic_muted": False,
            "camera_off": False,
        }
        await studio.send("media", mic_muted=True, camera_off=True)
        media = await watcher.expect("media", within=2.0)
        assert (media["mic_muted"], media["camera_off"]) == (True, True)
        assert (await _welcome(daphne_b, slug))["stream"]["media"] == {
            "mic_muted": True,
            "camera_off": True,
        }
    finally:
        for page in (studio, watcher):
            await page.close()


async def test_a_closed_studio_is_reconnecting_at_once_on_every_daphne_and_resumes_on_another(
    cluster: Cluster,
) -> None:
    """The studio's daphne tells the SFU worker holding its publisher that it is gone: the
    watch pages on both daphne processes see "reconnecting" at once (the publisher's peer
    connection still sends), and a studio on the other daphne carries the broadcast on."""
    daphne_a, daphne_b = cluster.daphne
    slug, _, key = cluster.new_stream("Cluster studio gone")
    first, again = Studio(daphne_a, slug), Studio(daphne_b, slug)
    watchers: list[Watcher] = []
    try:
        await first.go_live(key)
        watchers = await _watchers([daphne_a, daphne_b], slug)
        for watcher in watchers:
            assert watcher.viewer is not None
            assert await watcher.viewer.wait_for_frames(video=10, within=15)
        assert (await _welcome(daphne_b, slug))["publisher"] == "connected"

        await first.close_socket()  # the tab closes; its peer connection goes on
        assert await wait_until(
            lambda: all("reconnecting" in w.publisher_statuses for w in watchers), 2.0
        )
        assert (await _welcome(daphne_b, slug))["publisher"] == "reconnecting"

        await again.go_live(key)
        assert await wait_until(
            lambda: all(w.publisher_statuses[-1] == "connected" for w in watchers), 10
        )
        for watcher in watchers:
            frames = watcher.frames
            assert await wait_until(lambda w=watcher, f=frames: w.frames > f + 15, 10)
    finally:
        for page in (first, again, *watchers):
            await page.close()


async def test_stopping_the_only_worker_tells_its_pages_and_a_new_one_carries_on(
    cluster: Cluster,
) -> None:
    """SIGTERM to the one worker left, holding a broadcast: it exits within 5 s without an
    error, and its viewers hear "reconnecting" from it (no other worker is there to tell
    them). A worker started next moves the pages to itself; the studio publishes again."""
    while len(cluster.workers()) < 2:
        cluster.start_worker()
    daphne_a, daphne_b = cluster.daphne
    slug, stream_id, key = cluster.new_stream("Cluster stop")
    studio = Studio(daphne_a, slug)
    watchers: list[Watcher] = []
    try:
        await studio.go_live(key)
        watchers = await _watchers([daphne_b, daphne_a], slug)
        assert all(
            await asyncio.gather(
                *(w.viewer.wait_for_frames(video=20, within=15) for w in watchers if w.viewer)
            )
        )
        origin = next(w for w in cluster.workers() if stream_id in w.producers)
        for other in [w for w in cluster.workers() if w.id != origin.id]:
            cluster.worker_process(other)[0].kill()
        assert await wait_until(lambda: [w.id for w in cluster.workers()] == [origin.id], 5)
        process, log = cluster.worker_process(origin)

        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)
        stopped_after = time.monotonic() - stopped_at
        print(f"\nthe only worker stopped with SIGTERM: exited after {stopped_after:.2f} s")
        assert stopped_after < 5, log.read_text()
        assert log_errors(log.read_text()) == [], log.read_text()
        assert await wait_until(
            lambda: all("reconnecting" in w.publisher_statuses for w in watchers), 5
        ), [w.publisher_statuses for w in watchers]

        restarted_at = time.monotonic()
        cluster.start_worker()
        await studio.expect("restart", within=5)
        await studio.publisher.close()
        studio.publisher = TestPublisher()
        await studio.send("offer", sdp=await studio.publisher.create_offer())
        await studio.publisher.accept_answer((await studio.expect("answer"))["sdp"])
        assert await wait_until(lambda: all(w.offers[-1] > restarted_at for w in watchers), 5)
        assert all(
            await asyncio.gather(
                *(w.viewer.wait_for_frames(video=20, within=10) for w in watchers if w.viewer)
            )
        ), [w.frames for w in watchers]
        assert (await _welcome(daphne_b, slug))["stream"]["state"] == "live"
    finally:
        for watcher in watchers:
            await watcher.close()
        await studio.close()


async def test_a_broadcast_left_live_by_a_whole_cluster_restart_ends_after_the_grace(
    cluster: Cluster,
) -> None:
    """Every worker killed and Redis' state lost with them: the first worker to start ends,
    after the grace period, the broadcast that nobody publishes any more."""
    daphne_a, _ = cluster.daphne
    slug, _, key = cluster.new_stream("Cluster restart")
    studio = Studio(daphne_a, slug)
    try:
        await studio.go_live(key)
    finally:
        await studio.close()
    for worker in cluster.workers():
        process, _ = cluster.worker_process(worker)
        process.kill()
        await asyncio.to_thread(process.wait, 10)
    for stale in cluster.redis.scan_iter(f"{cluster.prefix}:sfu:*"):
        cluster.redis.delete(stale)

    grace = 2.0
    cluster.start_worker(ONAIR_PUBLISHER_GRACE_SECONDS=str(grace))
    started = time.monotonic()
    assert (await _welcome(daphne_a, slug))["stream"]["state"] == "live"
    while (await _welcome(daphne_a, slug))["stream"]["state"] == "live":
        assert time.monotonic() - started < grace + 5
        await asyncio.sleep(0.2)
    ended_after = time.monotonic() - started
    print(
        f"\nleft live by a whole cluster restart: ended {ended_after:.2f} s after a worker started"
    )
    assert ended_after >= grace - 0.5
    cluster.start_worker()
