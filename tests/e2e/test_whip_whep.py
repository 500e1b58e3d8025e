"""WHIP and WHEP through the real daphne server: an aiortc WHIP client (VP8/Opus and
H.264/Opus) plays on the watch page in headless Chromium, and a broadcast from the studio
page plays in the WHEP player page (with an ICE restart) and in an aiortc WHEP client.

The aiortc peers run on their own event loop in a thread: Playwright's sync API owns this
module's main thread (it must not be mixed with asyncio tests).
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from testpeers import TestPublisher, TestViewer
from tests.e2e.conftest import OnAirServer
from tests.e2e.test_live import _new_page, _restart_demo_stream, _wait_for_frames

WHEP_VIDEO = """async () => {
  const pc = window.onairWhep.state.pc;
  const result = {frames: 0, pair: "", ufrag: "", responses: 0};
  if (!pc) return result;
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") result.frames = s.framesDecoded || 0;
    if (s.type === "transport") {
      result.pair = s.selectedCandidatePairId || "";
      result.ufrag = s.iceLocalUsernameFragment || "";
    }
  });
  const pair = stats.get(result.pair);
  result.responses = pair ? pair.responsesReceived || 0 : 0;
  return result;
}"""


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: str


def _request(
    method: str, url: str, body: str | None = None, headers: dict[str, str] | None = None
) -> HttpResult:
    request = urllib.request.Request(
        url, data=body.encode() if body is not None else None, method=method
    )
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return HttpResult(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as error:
        return HttpResult(error.code, dict(error.headers), error.read().decode())


@dataclass
class ThreadedPeer:
    """An aiortc WHIP publisher or WHEP viewer on its own loop; ``stop()`` DELETEs."""

    server: OnAirServer
    protocol: str
    token: str | None = None
    codec: str = "vp8"
    post: HttpResult | None = None
    viewer: TestViewer | None = None
    delete_status: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def start(self) -> ThreadedPeer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self.ready.wait(20), "the peer did not start"
        return self

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            assert self._loop is not None
            assert self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(20)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        peer: TestPublisher | TestViewer
        if self.protocol == "whip":
            peer = TestPublisher(codec=self.codec)
        else:
            peer = self.viewer = TestViewer()
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.server.url(f"/{self.protocol}/{self.server.demo_slug}")
        try:
            offer = await peer.create_offer()
            self.post = await asyncio.to_thread(_request, "POST", url, offer, headers)
            if self.post.status == 201:
                await peer.accept_answer(self.post.body)
            self.ready.set()
            if self.post.status == 201:
                await self._stop.wait()
                location = self.server.url(self.post.headers["Location"])
                result = await asyncio.to_thread(_request, "DELETE", location, None, headers)
                self.delete_status = result.status
        finally:
            self.ready.set()
            await peer.close()


@pytest.fixture
def peers() -> Iterator[list[ThreadedPeer]]:
    started: list[ThreadedPeer] = []
    yield started
    for peer in started:
        peer.stop()


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_whip_publisher_plays_on_the_watch_page(
    codec: str, onair_server: OnAirServer, page: Page, peers: list[ThreadedPeer]
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    publisher = ThreadedPeer(server, "whip", token=server.demo_stream_key, codec=codec)
    peers.append(publisher.start())
    assert publisher.post is not None
    assert publisher.post.status == 201, publisher.post.body

    page.goto(f"/watch/{server.demo_slug}/")
    expect(page.locator("#live-badge")).to_be_visible()
    frames = _wait_for_frames(page, more_than=10)
    _wait_for_frames(page, more_than=frames)  # still rising
    assert page.evaluate("document.getElementById('player').videoWidth") == 320

    # A second WHIP publisher takes over; the page plays on. The first one's DELETE leaves
    # the broadcast alone, the current one's ends it, and the viewer is told.
    second = ThreadedPeer(server, "whip", token=server.demo_stream_key, codec=codec)
    peers.append(second.start())
    assert second.post is not None
    assert second.post.status == 201, second.post.body
    frames = _wait_for_frames(page, more_than=_wait_for_frames(page, more_than=frames) + 30)
    publisher.stop()
    assert publisher.delete_status == 200  # its session ended with the takeover
    _wait_for_frames(page, more_than=frames + 15)
    expect(page.locator("#live-badge")).to_be_visible()
    second.stop()
    assert second.delete_status == 200
    expect(page.locator("#playback-status")).to_contain_text("ended")


def test_studio_broadcast_plays_in_whep_player_and_aiortc(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    login: Callable[[Page, str, str], None],
    peers: list[ThreadedPeer],
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    login(page, server.demo_username, server.demo_password)
    page.goto(f"/studio/{server.demo_slug}/")
    expect(page.locator("#camera option").first).to_be_attached()
    page.click("#go-live")
    expect(page.locator("#connection-state")).to_have_text("connected")

    contexts: list[BrowserContext] = []
    player = _new_page(browser, server, contexts)
    try:
        player.goto(f"/whep/{server.demo_slug}/player/")
        player.click("#whep-play")
        expect(player.locator("#whep-status")).to_have_text("connected")
        frames = _whep_frames(player, more_than=10)
        expect(page.locator("#viewer-count")).to_have_text("1")

        # ICE restart from the browser: 200, new credentials, the picture carries on, and
        # Chromium's checks with the new credentials are answered on a new pair.
        before = player.evaluate(WHEP_VIDEO)
        assert player.evaluate("window.onairWhep.restartIce()") == 200
        frames = _whep_frames(player, more_than=frames + 30)
        after = player.evaluate(WHEP_VIDEO)
        assert after["ufrag"] != before["ufrag"]
        assert after["pair"] != before["pair"]
        assert after["responses"] > 0
        expect(player.locator("#whep-status")).to_have_text("connected")

        # An aiortc WHEP client decodes the same broadcast; both count as viewers.
        viewer = ThreadedPeer(server, "whep")
        peers.append(viewer.start())
        assert viewer.post is not None
        assert viewer.post.status == 201, viewer.post.body
        deadline = time.monotonic() + 20
        while viewer.viewer is not None and viewer.viewer.video.frames < 20:
            assert time.monotonic() < deadline, "the aiortc WHEP client decoded no frames"
            time.sleep(0.1)
        expect(page.locator("#viewer-count")).to_have_text("2")

        viewer.stop()
        assert viewer.delete_status == 200
        player.click("#whep-stop")
        expect(page.locator("#viewer-count")).to_have_text("0")
    finally:
        for context in contexts:
            context.close()


def _whep_frames(page: Page, more_than: int, within: float = 20.0) -> int:
    deadline = time.monotonic() + within
    frames = int(page.evaluate(WHEP_VIDEO)["frames"])
    while frames <= more_than and time.monotonic() < deadline:
        page.wait_for_timeout(100)
        frames = int(page.evaluate(WHEP_VIDEO)["frames"])
    assert frames > more_than, f"framesDecoded stayed at {frames}"
    return frames
