"""The live chat in real headless Chromium: the broadcaster in the studio and two logged-in
viewers on the watch page (plus an anonymous reader). Order is the same everywhere, a
message the broadcaster deletes disappears for everyone, a banned viewer's post is refused
with a message the page shows, the rate limit is answered clearly, and HTML in a message is
shown as text, never run. A recording's replay shows its broadcast's chat as the video
reaches each message."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.conftest import OnAirServer
from tests.e2e.test_live import _new_page
from tests.e2e.test_replay import delete_recording, store_recording, write_recording

TEXTS = "#chat-messages li .chat-text"


def _say(page: Page, text: str) -> None:
    page.get_by_label("Chat message").fill(text)
    page.get_by_label("Chat message").press("Enter")


def _texts(page: Page) -> list[str]:
    return page.locator(TEXTS).all_text_contents()


def test_chat_between_a_broadcaster_and_two_viewers(
    onair_server: OnAirServer,
    browser: Browser,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    server = onair_server
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice{tag}", f"bob{tag}"
    for name in (alice, bob):
        server.create_user(name, "chat-pw-1")

    studio = _new_page(browser, server, contexts)
    login(studio, server.demo_username, server.demo_password)
    studio.goto(f"/studio/{server.demo_slug}/")
    viewers = {}
    for name in (alice, bob):
        page = _new_page(browser, server, contexts)
        login(page, name, "chat-pw-1")
        page.goto(f"/watch/{server.demo_slug}/")
        viewers[name] = page
    reader = _new_page(browser, server, contexts)
    reader.goto(f"/watch/{server.demo_slug}/")
    pages = [studio, viewers[alice], viewers[bob], reader]
    errors: list[str] = []
    for page in pages:
        page.on("pageerror", lambda error: errors.append(str(error)))
        expect(page.locator("#chat-status")).to_be_hidden()  # joined
    expect(studio.locator("#chat-form")).to_be_visible()
    expect(studio.locator("#chat-moderation")).to_be_visible()  # the owner moderates
    expect(viewers[alice].locator("#chat-moderation")).to_be_hidden()
    expect(reader.locator("#chat-form")).to_be_hidden()  # anonymous: reads
    expect(reader.locator("#chat-login")).to_be_visible()

    # Order: the same on every page, as posted.
    before = len(_texts(studio))
    posted = [f"{tag} one", f"{tag} two", f"{tag} three"]
    _say(viewers[alice], posted[0])
    expect(studio.locator(TEXTS).last).to_have_text(posted[0])
    _say(studio, posted[1])
    expect(viewers[bob].locator(TEXTS).last).to_have_text(posted[1])
    _say(viewers[bob], posted[2])
    for page in pages:
        expect(page.locator(TEXTS).last).to_have_text(posted[2])
        assert _texts(page)[-3:] == posted
    assert _texts(studio)[before:] == posted
    # A new message is announced politely to screen readers.
    announcer = viewers[alice].locator("#chat-announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    expect(announcer).to_have_text(f"{bob}: {posted[2]}")

    # HTML is text: shown as typed, nothing runs, no element is made.
    evil = f'{tag} <img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    _say(viewers[bob], evil)
    for page in pages:
        expect(page.locator(TEXTS).last).to_have_text(evil)
        assert page.locator("#chat-messages img, #chat-messages script").count() == 0
        assert page.evaluate("() => window.pwned") is None

    # The broadcaster deletes alice's message: gone from every page.
    studio.get_by_role("button", name=f"Delete this message from {alice}").last.click()
    for page in pages:
        expect(page.locator(TEXTS, has_text=posted[0])).to_have_count(0)
        expect(page.locator(TEXTS, has_text=posted[2])).to_have_count(1)

    # The broadcaster bans bob: his next post is refused, and said so on his page.
    studio.get_by_role("button", name=f"Ban {bob} from this chat").last.click()
    studio.wait_for_function(
        "() => document.getElementById('chat-announcer').textContent === 'Banned.'"
    )
    expect(studio.locator("#chat-note")).to_have_text(f"{bob}: Banned.")
    _say(viewers[bob], f"{tag} am I banned?")
    expect(viewers[bob].locator("#chat-error")).to_contain_text("banned")
    _say(viewers[alice], f"{tag} after the ban")
    for page in pages:
        expect(page.locator(TEXTS).last).to_have_text(f"{tag} after the ban")
        expect(page.locator(TEXTS, has_text="am I banned?")).to_have_count(0)

    # Too fast: alice is told how long to wait; the refused message is not shown.
    for n in range(6):
        _say(viewers[alice], f"{tag} fast {n}")
    expect(viewers[alice].locator("#chat-error")).to_contain_text("too fast")
    expect(viewers[alice].locator("#chat-error")).to_have_attribute("role", "alert")
    expect(studio.locator(TEXTS, has_text=f"{tag} fast 5")).to_have_count(0)

    assert errors == []


def test_the_chat_fits_a_360_pixel_screen(onair_server: OnAirServer, page: Page) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"/watch/{onair_server.demo_slug}/")
    expect(page.locator("#chat-status")).to_be_hidden()
    box = page.locator("#chat").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 360
    assert page.evaluate("() => document.getElementById('chat').scrollWidth") <= box["width"]


PLAY = "() => { const v = document.getElementById('replay'); v.muted = true; v.play(); }"
SEEK_TO = "(to) => { const v = document.getElementById('replay'); v.pause(); v.currentTime = to; }"
# Chat messages of the recorded broadcast, at these seconds into the recording.
REPLAYED = ((1.0, "early in the show"), (3.5, '<b onmouseover="x()">later</b>'))


def test_a_replay_shows_each_chat_message_as_the_video_reaches_it(
    onair_server: OnAirServer, page: Page, tmp_path: Path
) -> None:
    server = onair_server
    path = tmp_path / "recording.webm"
    write_recording(path, "webm")
    recording_id = store_recording(server, path, "webm")
    said = ", ".join(f"({seconds}, {text!r})" for seconds, text in REPLAYED)
    server.manage(
        "shell",
        "-c",
        f"""
from datetime import timedelta
from django.contrib.auth.models import User
from chat.models import ChatMessage
from recordings.models import Recording
recording = Recording.objects.get(pk={recording_id!r})
user = User.objects.get(username={server.demo_username!r})
for seconds, text in [{said}]:
    ChatMessage.objects.create(
        stream=recording.stream, broadcast_started_at=recording.started_at, author=user,
        sender=f"user:{{user.pk}}", text=text,
        created_at=recording.started_at + timedelta(seconds=seconds),
    )
""",
    )
    try:
        page.goto(f"/recordings/{recording_id}/")
        texts = page.locator(TEXTS)
        expect(page.locator("#chat-heading")).to_have_text("Chat replay")
        expect(texts).to_have_count(0)  # nothing before the video reaches it
        page.evaluate(PLAY)
        expect(texts.first).to_have_text(REPLAYED[0][1], timeout=10_000)
        expect(texts).to_have_count(2, timeout=10_000)  # each as playback passed it
        expect(texts.last).to_have_text(REPLAYED[1][1])  # as text, never markup
        assert page.locator("#chat-messages b").count() == 0
        # Seeking shows the chat up to that moment.
        for to, shown in ((2.0, 1), (0.0, 0), (4.0, 2), (1.5, 1)):
            page.evaluate(SEEK_TO, to)
            expect(texts).to_have_count(shown)
    finally:
        delete_recording(server, recording_id)
