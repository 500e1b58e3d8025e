"""Going live and watching in real headless Chromium (fake camera and microphone) through
the real daphne server, Channels signaling and the in-process SFU.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
from playwright.sync_api import Browser, BrowserContext, Page, WebSocketRoute, expect

from tests.e2e.conftest import OnAirServer

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"

INBOUND_VIDEO = """async () => {
  const pc = window.onairWatch.state.pc;
  const result = {frames: 0, width: 0};
  if (!pc) return result;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      result.frames = s.framesDecoded || 0;
      result.width = s.frameWidth || 0;
    }
  });
  return result;
}"""

RECORDING_BASE64 = """async () => {
  const blob = await (await fetch(document.getElementById("recording-download").href)).blob();
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}"""


def _frames(page: Page) -> int:
    return int(page.evaluate(INBOUND_VIDEO)["frames"])


def _wait_for_frames(page: Page, more_than: int, within: float = 20.0) -> int:
    deadline = time.monotonic() + within
    frames = _frames(page)
    while frames <= more_than and time.monotonic() < deadline:
        page.wait_for_timeout(100)
        frames = _frames(page)
    assert frames > more_than, f"framesDecoded stayed at {frames}"
    return frames


def _wait_for_width_above(page: Page, width: int, within: float = 20.0) -> int:
    deadline = time.monotonic() + within
    seen = int(page.evaluate(INBOUND_VIDEO)["width"])
    while seen <= width and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        seen = int(page.evaluate(INBOUND_VIDEO)["width"])
    assert seen > width, f"frameWidth stayed at {seen}"
    return seen


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _new_page(browser: Browser, server: OnAirServer, opened: list[BrowserContext]) -> Page:
    context = browser.new_context(base_url=server.base_url)
    context.set_default_timeout(15_000)
    opened.append(context)
    return context.new_page()


def _restart_demo_stream(server: OnAirServer) -> None:
    """Put the demo stream back to idle, whatever an earlier test did, through the REST API:
    the daphne process that holds the stream's SFU router must see the end (a state change
    written by another process would leave the router, and its publisher, running)."""

    def call(method: str, path: str, token: str | None = None, **form: str) -> dict[str, Any]:
        headers = {"Authorization": f"Token {token}"} if token else {}
        data = urllib.parse.urlencode(form).encode() if form else None
        request = urllib.request.Request(server.url(path), data, headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
            return body

    token = call(
        "POST",
        "/api/v1/auth/token/",
        username=server.demo_username,
        password=server.demo_password,
    )["token"]
    stream = f"/api/v1/streams/{server.demo_slug}/"
    if call("GET", stream, token)["state"] == "live":
        call("POST", stream + "end/", token)
    if call("GET", stream, token)["state"] == "ended":
        call("POST", stream + "restart/", token)


def test_broadcast_to_three_viewers(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
    tmp_path: Path,
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    login(page, server.demo_username, server.demo_password)
    watch_url = f"/watch/{server.demo_slug}/"

    # A viewer who arrives before the broadcast sees "offline" and waits.
    early = _new_page(browser, server, contexts)
    early.goto(watch_url)
    expect(early.locator("#playback-status")).to_contain_text("Offline")

    studio = page
    studio.goto(f"/studio/{server.demo_slug}/")
    expect(studio.locator("#key-form")).to_be_hidden()  # the owner needs no key
    expect(studio.locator("#camera option").first).to_be_attached()
    studio.select_option("#resolution", "360p")
    expect(studio.locator("#capture-settings")).to_contain_text("640\u00d7360")
    expect(studio.locator("#viewer-count")).to_have_text("0")

    # Go live: the waiting viewer plays within 3 s, without a reload.
    clicked = time.monotonic()
    studio.click("#go-live")
    _wait_for_frames(early, more_than=0, within=3.0)
    first_frame_after = time.monotonic() - clicked
    expect(studio.locator("#connection-state")).to_have_text("connected")
    expect(studio.locator("#stream-state")).to_have_text("live")
    expect(early.locator("#live-badge")).to_be_visible()
    expect(early.locator("#playback-overlay")).to_be_hidden()

    # Two more viewers: the studio counts 3.
    viewers = [early, _new_page(browser, server, contexts), _new_page(browser, server, contexts)]
    for viewer in viewers[1:]:
        viewer.goto(watch_url)
    expect(studio.locator("#viewer-count")).to_have_text("3")
    expect(studio.locator("#peak-viewers")).to_have_text("3")
    camera_frames = []
    for index, viewer in enumerate(viewers):
        frames = _wait_for_frames(viewer, more_than=10)
        camera_frames.append(_wait_for_frames(viewer, more_than=frames))  # still rising
        assert viewer.evaluate("document.getElementById('player').videoWidth") > 0
        expect(viewer.locator("#viewer-count")).to_have_text("3")
        _shot(viewer, f"watch-viewer-{index + 1}")
    # The 360p camera: at most 640 wide (Chrome scales a camera down when its CPU is busy).
    assert 0 < int(early.evaluate(INBOUND_VIDEO)["width"]) <= 640

    # Muted autoplay, a clear unmute control, stats in a toggleable overlay.
    assert early.evaluate("document.getElementById('player').muted") is True
    early.click("#unmute")
    assert early.evaluate("document.getElementById('player').muted") is False
    expect(early.locator("#stats")).to_be_hidden()
    early.click("#stats-toggle")
    expect(early.locator("#frames-decoded")).not_to_have_text("0")
    expect(early.locator("#in-bitrate")).to_contain_text("bps")
    expect(studio.locator("#out-bitrate")).to_contain_text("bps")

    # Screen share while live: viewers get the screen's resolution on the same connection.
    for viewer in viewers:
        viewer.evaluate("window.__pc = window.onairWatch.state.pc")
    expect(studio.locator("#source-camera")).to_have_attribute("aria-pressed", "true")
    studio.click("#source-screen")
    expect(studio.locator("#source-label")).to_have_text("Screen")
    # The toggle says which source is on to assistive technology too, not by its style only.
    expect(studio.locator("#source-screen")).to_have_attribute("aria-pressed", "true")
    expect(studio.locator("#source-camera")).to_have_attribute("aria-pressed", "false")
    # The preview says the broadcast is live, for how long, and to how many.
    expect(studio.locator("#live-pill")).to_be_visible()
    expect(studio.locator("#stage-viewer-count")).to_have_text("3")
    # The screen is 1280 wide, and Chrome keeps a screen's resolution under load.
    for viewer in viewers:
        _wait_for_width_above(viewer, 640)
        assert viewer.evaluate("window.__pc === window.onairWatch.state.pc")
    _shot(studio, "studio-live")
    _shot(early, "watch-screen-share")

    # One viewer leaves: 2.
    contexts[-1].close()
    contexts.pop()
    expect(studio.locator("#viewer-count")).to_have_text("2")

    # Local recording of what is broadcast: a playable WebM.
    studio.click("#record-start")
    studio.wait_for_timeout(2500)
    studio.click("#record-stop")
    expect(studio.locator("#recording-download")).to_be_visible()
    expect(studio.locator("#recording-state")).to_contain_text(re.compile(r"recorded \d"))
    recording = tmp_path / "recording.webm"
    recording.write_bytes(base64.b64decode(studio.evaluate(RECORDING_BASE64)))
    with av.open(str(recording)) as container:
        video = container.streams.video[0]
        decoded = [frame for _, frame in zip(range(10), container.decode(video), strict=False)]
    assert len(decoded) == 10
    assert decoded[-1].time is not None
    assert decoded[-1].time > 0
    assert decoded[0].width > 0

    # The broadcaster's page reloads and goes live again: viewers resume on the same
    # connection.
    frames = _frames(early)
    studio.reload()
    expect(early.locator("#playback-status")).to_contain_text("reconnecting")
    studio.click("#go-live")
    _wait_for_frames(early, more_than=frames + 10)
    assert early.evaluate("window.__pc === window.onairWatch.state.pc")

    # Ending: the studio confirms, every viewer sees "ended".
    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")
    for viewer in viewers[:2]:
        expect(viewer.locator("#playback-status")).to_contain_text("ended")
    expect(studio.locator("#stream-state")).to_have_text("ended")
    print(f"first frame {first_frame_after:.2f} s after Go live")


def test_strangers_cannot_publish(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    server.create_user("mallory", "mallory-password")
    login(page, "mallory", "mallory-password")
    page.goto(f"/studio/{server.demo_slug}/")
    expect(page.locator("#key-form")).to_be_visible()

    page.click("#go-live")
    expect(page.locator("#studio-error")).to_contain_text("Only the stream's owner")
    page.fill("#stream-key", "sk_" + "x" * 43)
    page.click("#key-form button")
    expect(page.locator("#studio-error")).to_contain_text("wrong or was revoked")
    _shot(page, "studio-stranger")
    state = server.manage(
        "shell",
        "-c",
        "from broadcast.models import Stream; "
        f"print(Stream.objects.get(slug={server.demo_slug!r}).state)",
    )
    assert state.strip().splitlines()[-1] == "idle"

    # Without an account the studio asks to log in.
    anonymous = _new_page(browser, server, contexts)
    anonymous.goto(f"/studio/{server.demo_slug}/")
    expect(anonymous).to_have_url(re.compile(r"/accounts/login/"))


def test_go_live_waits_for_the_servers_welcome(
    logged_in_page: Page, onair_server: OnAirServer
) -> None:
    # Clicked before the signaling connection had its welcome, Go live made an offer that
    # went nowhere (the socket not open yet): the studio stayed "connecting" for good.
    page = logged_in_page
    held: list[WebSocketRoute] = []
    page.route_web_socket(re.compile(r".*/ws/studio/.*"), lambda route: held.append(route))
    page.goto(f"/studio/{onair_server.demo_slug}/")
    expect(page.locator("#camera option").first).to_be_attached(timeout=20_000)
    expect(page.locator("#go-live")).to_be_disabled()
    page.wait_for_timeout(300)  # (a welcome would have come by now)
    expect(page.locator("#go-live")).to_be_disabled()
    assert len(held) == 1
    held[0].connect_to_server()
    expect(page.locator("#go-live")).to_be_enabled()
    expect(page.locator("#stream-state")).not_to_have_text("")


SLOW_SET_PARAMETERS = """(() => {
  const set = RTCRtpSender.prototype.setParameters;
  RTCRtpSender.prototype.setParameters = function (...args) {
    return new Promise((resolve) => setTimeout(resolve, 1500)).then(() => set.apply(this, args));
  };
})();"""


def test_a_camera_change_while_going_live_is_sent_once_live(
    logged_in_page: Page, onair_server: OnAirServer
) -> None:
    # A resolution picked while Go live was setting up its peer connection re-opened the
    # camera, whose new tracks made the studio publish again: that closed the connection
    # Go live was still adding tracks to, and the studio stayed "connecting" for good.
    _restart_demo_stream(onair_server)
    page = logged_in_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(SLOW_SET_PARAMETERS)  # holds Go live inside its setup for 1.5 s
    page.goto(f"/studio/{onair_server.demo_slug}/")
    expect(page.locator("#camera option").first).to_be_attached(timeout=20_000)
    page.select_option("#resolution", "720p")
    expect(page.locator("#go-live")).to_be_enabled()
    page.click("#go-live")
    expect(page.locator("#connection-state")).to_have_text("connecting")
    page.select_option("#resolution", "360p")
    expect(page.locator("#stream-state")).to_have_text("live", timeout=20_000)
    sent_height = """() => window.onairStudio.state.pc.getSenders()
        .find((s) => s.track && s.track.kind === "video").track.getSettings().height"""
    assert page.evaluate(sent_height) == 360  # the camera as picked last
    assert errors == []
    _restart_demo_stream(onair_server)  # the next tests find it idle
