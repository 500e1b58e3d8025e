"""A live broadcast's poster from real encoders: the studio in headless Chromium (VP8
simulcast), whose visitor sees a JPEG of its video on the home page's card and as the watch
page player's poster; FFmpeg publishing H.264 over WHIP."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import av
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import OnAirServer
from tests.e2e.test_live import _new_page, _restart_demo_stream

POSTER_SIZE = """(img) => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]"""


def test_the_home_page_card_and_the_watch_page_show_the_live_poster(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    login(page, server.demo_username, server.demo_password)
    studio = page
    studio.goto(f"/studio/{server.demo_slug}/")
    expect(studio.locator("#camera option").first).to_be_attached()
    studio.select_option("#resolution", "720p")
    studio.click("#go-live")
    expect(studio.locator("#stream-state")).to_have_text("live")

    visitor = _new_page(browser, server, contexts)
    card = visitor.locator(f'.stream-card[data-slug="{server.demo_slug}"]')
    poster = card.locator("img.stream-poster")
    deadline = time.monotonic() + 20
    while True:  # the first poster comes with the broadcast's first keyframe
        visitor.goto("/")
        if poster.count() or time.monotonic() > deadline:
            break
        visitor.wait_for_timeout(500)
    expect(poster).to_have_count(1)
    visitor.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=poster.element_handle()
    )
    width, height = poster.evaluate(POSTER_SIZE)
    # the middle or top layer of the 720p studio's simulcast, 640 pixels wide
    assert (width, height) == (640, 360)
    src = poster.get_attribute("src")
    assert src is not None
    assert src.startswith(f"/streams/{server.demo_slug}/poster.jpg?v=")

    visitor.goto(f"/watch/{server.demo_slug}/")
    assert visitor.locator("#player").get_attribute("poster") == src

    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")
    expect(studio.locator("#stream-state")).to_have_text("ended")


def _poster(server: OnAirServer) -> tuple[str, bytes] | None:
    """The demo stream's poster: its version (ETag) and its JPEG."""
    try:
        with urllib.request.urlopen(server.url(f"/streams/{server.demo_slug}/poster.jpg")) as r:
            body: bytes = r.read()
            return r.headers["ETag"], body
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise
        return None


def test_an_ffmpeg_h264_broadcast_gets_a_poster(onair_server: OnAirServer) -> None:
    pytest.importorskip("imageio_ffmpeg")
    from tests.e2e.test_ffmpeg_whip import ffmpeg_whip_command

    server = onair_server
    _restart_demo_stream(server)
    # The poster an earlier broadcast of the demo stream left (a studio's is 640x360 too;
    # another FFmpeg broadcast's is the same picture, byte for byte): this broadcast's must
    # replace it, which its version tells.
    before = _poster(server)
    ffmpeg = subprocess.Popen(
        ffmpeg_whip_command(server.url(f"/whip/{server.demo_slug}"), server.demo_stream_key, 8),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while (poster := _poster(server)) in (None, before) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        ffmpeg.terminate()
        ffmpeg.wait(10)
    assert poster is not None
    assert poster != before, "no new poster within 15 s"
    jpeg = poster[1]
    decoder = av.CodecContext.create("mjpeg", "r")
    (picture,) = [*decoder.decode(av.Packet(jpeg)), *decoder.decode(None)]
    assert (picture.width, picture.height) == (640, 360)
