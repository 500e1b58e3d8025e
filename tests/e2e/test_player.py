"""The watch page's player, share panel and the embeddable player in real headless Chromium,
against daphne and the in-process SFU: fullscreen, picture in picture, Unmute on the video,
the broadcaster's camera-off and muted-mic overlays, copying the link, and /embed/<slug>/
playing inside an <iframe> of a page on another origin (while /watch/ refuses to be framed).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import Browser, BrowserContext, Frame, Page, expect

from tests.e2e.conftest import OnAirServer
from tests.e2e.test_live import _new_page, _restart_demo_stream, _shot, _wait_for_frames

# The overlays must show within 2 s of the broadcaster's click (a polled deadline).
OVERLAY_WITHIN_MS = 2_000

# Frames the page's <video> has shown: what a viewer sees, not what the decoder received.
SHOWN_FRAMES = "() => document.getElementById('player').getVideoPlaybackQuality().totalVideoFrames"


def _go_live(studio: Page, server: OnAirServer) -> None:
    studio.goto(f"/studio/{server.demo_slug}/")
    expect(studio.locator("#camera option").first).to_be_attached()
    studio.select_option("#resolution", "360p")
    studio.click("#go-live")
    expect(studio.locator("#stream-state")).to_have_text("live", timeout=20_000)


def _end(studio: Page) -> None:
    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")
    expect(studio.locator("#stream-state")).to_have_text("ended")


def _wait_for_shown_frames(target: Page | Frame, more_than: int, within_ms: int = 20_000) -> int:
    target.wait_for_function(f"({SHOWN_FRAMES})() > {more_than}", timeout=within_ms)
    return int(target.evaluate(SHOWN_FRAMES))


def test_player_controls_and_the_broadcasters_overlays(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    login(page, server.demo_username, server.demo_password)
    viewer = _new_page(browser, server, contexts)
    errors: list[str] = []
    viewer.on("pageerror", lambda error: errors.append(str(error)))
    viewer.goto(f"/watch/{server.demo_slug}/")
    expect(viewer.locator("#playback-status")).to_contain_text("Offline")
    # Offline: no Unmute, nothing to pause; the controls are labelled and keyboard-reachable.
    expect(viewer.locator("#unmute")).to_be_hidden()
    expect(viewer.locator("#play-toggle")).to_be_hidden()
    assert viewer.locator(".live-header #unmute").count() == 0  # on the video, not the header
    for control, key in (("#mute-toggle", "m"), ("#fullscreen-toggle", "f")):
        expect(viewer.locator(control)).to_have_attribute("aria-keyshortcuts", key)
        expect(viewer.locator(control)).to_have_attribute("aria-label", re.compile(r"\S"))
    expect(viewer.locator("#volume")).to_have_attribute("aria-label", "Volume")

    studio = page
    _go_live(studio, server)
    _wait_for_frames(viewer, more_than=5)
    _wait_for_shown_frames(viewer, more_than=5)

    # Muted autoplay with Unmute on the video; unmuting works and the button goes.
    assert viewer.evaluate("document.getElementById('player').muted") is True
    expect(viewer.locator("#player-box #unmute")).to_be_visible()
    expect(viewer.locator("#play-toggle")).to_be_visible()
    viewer.click("#unmute")
    assert viewer.evaluate("document.getElementById('player').muted") is False
    expect(viewer.locator("#unmute")).to_be_hidden()
    expect(viewer.locator("#mute-toggle")).to_have_attribute("aria-label", "Mute")
    viewer.locator("#volume").fill("0.3")
    assert viewer.evaluate("document.getElementById('player').volume") == 0.3
    viewer.keyboard.press("m")  # the shortcut mutes …
    assert viewer.evaluate("document.getElementById('player').muted") is True
    expect(viewer.locator("#unmute")).to_be_visible()
    viewer.locator("#mute-toggle").focus()
    viewer.keyboard.press("Enter")  # … and the focused button unmutes
    assert viewer.evaluate("document.getElementById('player').muted") is False

    # Fullscreen: the player box (controls and overlays with it); f leaves it again.
    viewer.click("#fullscreen-toggle")
    viewer.wait_for_function("document.fullscreenElement?.id === 'player-box'")
    expect(viewer.locator("#fullscreen-toggle")).to_have_attribute("aria-label", "Exit fullscreen")
    viewer.keyboard.press("f")
    viewer.wait_for_function("document.fullscreenElement === null")

    # Picture in picture, where the browser offers it (Chromium does).
    assert viewer.evaluate("document.pictureInPictureEnabled") is True
    viewer.click("#pip-toggle")
    viewer.wait_for_function("document.pictureInPictureElement?.id === 'player'")
    viewer.keyboard.press("p")
    viewer.wait_for_function("document.pictureInPictureElement === null")

    # Pause and play again (a live broadcast: it goes on at the live edge).
    viewer.click("#play-toggle")
    expect(viewer.locator("#playback-status")).to_contain_text("Paused")
    viewer.click("#play-toggle")
    expect(viewer.locator("#playback-overlay")).to_be_hidden()

    # The broadcaster turns the camera off, then mutes the microphone: the viewer sees each
    # within 2 s.
    expect(viewer.locator("#camera-off")).to_be_hidden()
    clicked = time.monotonic()
    studio.click("#mute-camera")
    expect(viewer.locator("#camera-off")).to_be_visible(timeout=OVERLAY_WITHIN_MS)
    camera_off_after = time.monotonic() - clicked
    expect(viewer.locator("#camera-off")).to_contain_text("camera off")
    clicked = time.monotonic()
    studio.click("#mute-mic")
    expect(viewer.locator("#mic-muted")).to_be_visible(timeout=OVERLAY_WITHIN_MS)
    mic_muted_after = time.monotonic() - clicked
    _shot(viewer, "watch-camera-off-mic-muted")

    # Someone who arrives now sees both at once (the welcome carries them).
    late = _new_page(browser, server, contexts)
    late.goto(f"/watch/{server.demo_slug}/")
    expect(late.locator("#camera-off")).to_be_visible()
    expect(late.locator("#mic-muted")).to_be_visible()

    studio.click("#mute-camera")
    studio.click("#mute-mic")
    for page_ in (viewer, late):
        expect(page_.locator("#camera-off")).to_be_hidden(timeout=OVERLAY_WITHIN_MS)
        expect(page_.locator("#mic-muted")).to_be_hidden(timeout=OVERLAY_WITHIN_MS)

    # Ended: no Unmute or overlays over the "ended" notice.
    late.click("#mute-toggle")  # muted again: Unmute would show while live
    _end(studio)
    expect(late.locator("#playback-status")).to_contain_text("ended")
    expect(late.locator("#unmute")).to_be_hidden()
    expect(late.locator("#play-toggle")).to_be_hidden()
    assert errors == []
    _restart_demo_stream(server)
    print(f"overlays seen {camera_off_after:.2f} s (camera) and {mic_muted_after:.2f} s (mic)")


def test_copy_link_and_embed_code(
    browser: Browser, onair_server: OnAirServer, contexts: list[BrowserContext]
) -> None:
    context = browser.new_context(base_url=onair_server.base_url)
    contexts.append(context)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"/watch/{onair_server.demo_slug}/")
    link = onair_server.url(f"/watch/{onair_server.demo_slug}/")
    expect(page.locator("#share-link")).to_have_value(link)

    page.get_by_role("button", name="Copy link").click()
    expect(page.locator("[data-copy='#share-link']")).to_have_text("Copied")
    expect(page.get_by_role("status").filter(has_text="Link copied")).to_be_attached()
    assert page.evaluate("navigator.clipboard.readText()") == link

    page.get_by_role("button", name="Copy embed code").click()
    code = page.evaluate("navigator.clipboard.readText()")
    assert code.startswith(f'<iframe src="{onair_server.url(f"/embed/{onair_server.demo_slug}/")}"')
    assert 'allow="autoplay; fullscreen; picture-in-picture"' in code
    # Where the Clipboard API is refused, the text is copied the old way, still "Copied".
    page.evaluate(
        "() => { navigator.clipboard.writeText = () => "
        "Promise.reject(new DOMException('refused', 'NotAllowedError')); }"
    )
    page.get_by_role("button", name="Copy link").click()
    expect(page.locator("[data-copy='#share-link']")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == link


@contextmanager
def _other_origin_page(html: str) -> Iterator[str]:
    """A tiny web server on 127.0.0.1 answering ``html`` for every path; its URL, by name
    (``localhost``): another origin, and another site, than the OnAir server's 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_embed_plays_in_an_iframe_on_another_origin_and_the_watch_page_does_not(
    browser: Browser,
    onair_server: OnAirServer,
    page: Page,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    _restart_demo_stream(server)
    login(page, server.demo_username, server.demo_password)
    _go_live(page, server)
    embed_url = server.url(f"/embed/{server.demo_slug}/")
    watch_url = server.url(f"/watch/{server.demo_slug}/")
    host_page = (
        "<!doctype html><title>A blog</title><h1>My blog</h1>"
        f'<iframe id="embed" src="{embed_url}" width="640" height="360" '
        'allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>'
        f'<iframe id="watch" src="{watch_url}" width="640" height="360"></iframe>'
    )
    with _other_origin_page(host_page) as blog_url:
        blog = _new_page(browser, server, contexts)
        errors: list[str] = []
        blog.on("pageerror", lambda error: errors.append(str(error)))
        blog.goto(blog_url)
        frame = blog.frame_locator("#embed")
        expect(frame.locator("#player")).to_be_attached()
        embedded = next(f for f in blog.frames if f.url == embed_url)
        assert embedded.evaluate("location.origin") != blog.evaluate("location.origin")
        frames = _wait_for_shown_frames(embedded, more_than=10)
        _wait_for_shown_frames(embedded, more_than=frames)  # still playing
        assert embedded.evaluate("document.getElementById('player').videoWidth") > 0
        # No site chrome; muted autoplay with Unmute on the video, which works.
        assert embedded.evaluate("document.querySelector('.site-header')") is None
        assert embedded.evaluate("document.getElementById('player').muted") is True
        frame.locator("#unmute").click()
        assert embedded.evaluate("document.getElementById('player').muted") is False
        expect(frame.locator("#unmute")).to_be_hidden()
        _shot(blog, "embed-on-another-origin")

        # The watch page refuses to be framed (X-Frame-Options: DENY): nothing of it loads.
        watch_frame = blog.locator("#watch").content_frame
        expect(watch_frame.locator("body")).to_be_attached()
        assert watch_frame.locator("#player").count() == 0
        assert errors == []
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#end-broadcast")
    expect(page.locator("#stream-state")).to_have_text("ended")
    _restart_demo_stream(server)


def test_the_key_panel_gives_obs_its_whip_server(
    browser: Browser,
    onair_server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    context = browser.new_context(base_url=onair_server.base_url)
    contexts.append(context)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    onair_server.create_user("obs-user", "a-long-obs-pass-phrase")
    login(page, "obs-user", "a-long-obs-pass-phrase")
    page.fill("#id_title", "From OBS")
    page.click("text=Create stream")
    secret = page.locator("#new-key-secret").inner_text()
    slug = page.locator("tr", has_text="From OBS").get_attribute("data-slug")
    whip = onair_server.url(f"/whip/{slug}")
    expect(page.locator("#new-key-whip")).to_have_text(whip)
    page.get_by_role("button", name="Copy the WHIP server").click()
    expect(page.get_by_role("status").filter(has_text="WHIP server copied")).to_be_attached()
    assert page.evaluate("navigator.clipboard.readText()") == whip
    page.get_by_role("button", name="Copy the OBS setup").click()
    obs = f"Service: WHIP, Server: {whip}, Bearer Token: {secret}"
    assert page.evaluate("navigator.clipboard.readText()") == obs
    _shot(page, "my-streams-key-panel")
    assert secret not in onair_server.log()  # the key is never logged
