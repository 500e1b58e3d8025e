"""Replay in real Chromium (#21 acceptance 3): a recording plays on its replay page, served by
the range-serving view, and seeks to the middle and near the end, where it decodes frames.

The recordings are real files made here with PyAV (VP8 + Opus in WebM, as the SFU records a
browser's broadcast; H.264 + Opus in MP4, as it records a WHIP encoder's), stored through
the recordings' storage of the test server; and one recorded by the server from a studio's
broadcast, with the studio's "● REC" and the watch page's way to it once it is ready.
"""

from __future__ import annotations

import array
import fractions
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import av
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from testpeers import pattern_planes
from tests.daphne import log_errors
from tests.e2e.conftest import ARTIFACTS, OnAirServer, running_server

SECONDS = 6
FPS = 15
WIDTH, HEIGHT = 320, 240
AUDIO_RATE = 48_000
AUDIO_SAMPLES = 960  # 20 ms

# container: (video encoder, its codec, the type a browser must play for it)
FORMATS = {
    "webm": ("libvpx", "vp8", 'video/webm; codecs="vp8, opus"'),
    "mp4": ("libx264", "h264", 'video/mp4; codecs="avc1.42E01E, opus"'),
}


def write_recording(path: Path, container: str) -> None:
    """``SECONDS`` of the test pattern and a 440 Hz tone, a keyframe every second."""
    encoder = FORMATS[container][0]
    with av.open(str(path), "w", format=container) as output:
        video = cast(av.VideoStream, output.add_stream(encoder, rate=FPS))
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = (
            {"deadline": "realtime", "cpu-used": "8", "g": str(FPS)}
            if encoder == "libvpx"
            else {"preset": "ultrafast", "g": str(FPS)}
        )
        audio = output.add_stream("libopus", rate=AUDIO_RATE)
        audio.layout = "mono"
        planes = pattern_planes(WIDTH, HEIGHT, FPS)
        for index in range(SECONDS * FPS):
            luma, chroma = planes[index % FPS]
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            for plane, data in zip(frame.planes, (luma, chroma, chroma), strict=True):
                plane.update(data)
            frame.pts, frame.time_base = index, fractions.Fraction(1, FPS)
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        tone = array.array(
            "h",
            (
                int(8000 * math.sin(2 * math.pi * 440 * n / AUDIO_RATE))
                for n in range(AUDIO_SAMPLES)
            ),
        ).tobytes()
        for index in range(SECONDS * AUDIO_RATE // AUDIO_SAMPLES):
            sound = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
            sound.planes[0].update(tone)
            sound.sample_rate = AUDIO_RATE
            sound.pts, sound.time_base = index * AUDIO_SAMPLES, fractions.Fraction(1, AUDIO_RATE)
            output.mux(audio.encode(sound))
        output.mux(audio.encode(None))


def store_recording(server: OnAirServer, path: Path, container: str) -> str:
    """A ready, published recording of the demo stream with the file at ``path``; its id."""
    code = f"""
from datetime import timedelta
from django.core.files import File
from django.utils import timezone
from broadcast.models import Stream
from recordings.models import Recording
from recordings.storage import recording_storage
import av
with av.open({str(path)!r}) as probe:
    duration = probe.duration / 1e6
stream = Stream.objects.get(slug={server.demo_slug!r})
started = timezone.now() - timedelta(minutes=10)
recording = Recording.objects.create(
    stream=stream, state=Recording.State.READY, published=True, container={container!r},
    started_at=started, ended_at=started + timedelta(seconds=duration), duration=duration,
    size={path.stat().st_size}, video_codec={FORMATS[container][1]!r}, audio_codec="opus",
    width={WIDTH}, height={HEIGHT}, video_frames={SECONDS * FPS},
)
with open({str(path)!r}, "rb") as handle:
    recording.file.name = recording_storage().save(f"{{recording.pk}}.{container}", File(handle))
recording.save(update_fields=["file"])
print(recording.pk)
"""
    return server.manage("shell", "-c", code).split()[-1]


def delete_recording(server: OnAirServer, recording_id: str) -> None:
    code = f"""
from recordings.models import Recording
recording = Recording.objects.get(pk={recording_id!r})
recording.file.delete(save=False)
recording.delete()
"""
    server.manage("shell", "-c", code)


@pytest.fixture(scope="module", params=sorted(FORMATS))
def recording(
    request: pytest.FixtureRequest,
    onair_server: OnAirServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    container: str = request.param
    path = tmp_path_factory.mktemp("replay") / f"recording.{container}"
    write_recording(path, container)
    recording_id = store_recording(onair_server, path, container)
    yield container, recording_id
    delete_recording(onair_server, recording_id)


def _page_in(browser: Browser, server: OnAirServer, opened: list[BrowserContext]) -> Page:
    """A page of a browser context of its own (another person)."""
    context = browser.new_context(base_url=server.base_url)
    context.set_default_timeout(15_000)
    opened.append(context)
    return context.new_page()


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# What the watch page's player has decoded.
DECODED = """() => {
  const video = document.getElementById("player");
  return video.getVideoPlaybackQuality().totalVideoFrames;
}"""

PLAYER = """() => {
  const video = document.getElementById("replay");
  return {
    time: video.currentTime,
    duration: video.duration,
    frames: video.getVideoPlaybackQuality().totalVideoFrames,
    width: video.videoWidth,
    error: video.error && video.error.message,
  };
}"""

SEEK = """async (to) => {
  const video = document.getElementById("replay");
  const seeked = new Promise((done) => video.addEventListener("seeked", done, { once: true }));
  video.currentTime = to;
  await seeked;
  return video.currentTime;
}"""


def _frames_after(page: Page, frames: int, *, past: float) -> dict[str, Any]:
    """Waits (≤ 10 s) until the player has shown more than ``frames`` frames and its time
    is past ``past``; returns what it shows."""
    page.wait_for_function(
        f"""() => {{
          const video = document.getElementById("replay");
          return video.getVideoPlaybackQuality().totalVideoFrames > {frames}
            && video.currentTime > {past};
        }}""",
        timeout=10_000,
    )
    state: dict[str, Any] = page.evaluate(PLAYER)
    return state


def play_and_seek(
    page: Page, recording_id: str, *, seconds: float | None = None, width: int | None = None
) -> None:
    """On the replay page (open): the recording plays, seeks to the middle and near the end,
    and decodes frames after each seek. Its duration is ``seconds`` (± 0.5 s) and its
    picture ``width`` wide, when given."""
    file_url = f"/recordings/{recording_id}/file"
    video = page.locator("#replay")
    expect(video).to_have_attribute("src", file_url)
    page.wait_for_function(
        "() => document.getElementById('replay').readyState >= 1", timeout=10_000
    )
    start = page.evaluate(PLAYER)
    if seconds is None:
        seconds = float(start["duration"])
        assert 2 < seconds < 3600, start  # finite: the file says how long it is
    assert abs(start["duration"] - seconds) < 0.5, start
    page.evaluate(
        "() => { const v = document.getElementById('replay'); v.muted = true; return v.play(); }"
    )
    playing = _frames_after(page, 0, past=0.2)
    assert playing["width"] == width if width else playing["width"] > 0

    middle = page.evaluate(SEEK, seconds / 2)
    assert abs(middle - seconds / 2) < 0.1
    after_middle = _frames_after(page, int(playing["frames"]), past=seconds / 2)
    assert seconds / 2 < after_middle["time"] < seconds

    near_end = page.evaluate(SEEK, seconds - 0.7)
    assert abs(near_end - (seconds - 0.7)) < 0.1
    at_end = _frames_after(page, int(after_middle["frames"]), past=seconds - 0.7)
    assert at_end["error"] is None


def test_replay_plays_and_seeks(
    onair_server: OnAirServer, page: Page, recording: tuple[str, str]
) -> None:
    container, recording_id = recording
    playable = page.evaluate(
        "(type) => document.createElement('video').canPlayType(type)", FORMATS[container][2]
    )
    if not playable:
        pytest.skip(f"this Chromium does not play {FORMATS[container][2]}")
    file_url = f"/recordings/{recording_id}/file"
    served: list[tuple[int, str | None]] = []
    page.on(
        "response",
        lambda response: (
            served.append((response.status, response.request.headers.get("range")))
            if response.url.endswith(file_url)
            else None
        ),
    )

    page.goto(f"/recordings/{recording_id}/")

    expect(page.locator("#replay")).to_have_attribute(
        "aria-label", re.compile(r"^Recording of OnAir demo, ")
    )
    play_and_seek(page, recording_id, seconds=SECONDS, width=WIDTH)

    _shot(page, f"replay-{container}")
    # the browser asked for byte ranges and was answered with 206
    assert any(status == 206 and ranged for status, ranged in served), served


def test_a_broadcast_is_recorded_then_replayed(
    browser: Browser,
    onair_server: OnAirServer,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    """The studio shows "● REC" and its running time while the server records; when the
    broadcast ends, its viewer is offered the recording as soon as it is ready, which plays
    and seeks; a viewer arriving after the end finds it under Past broadcasts."""
    server = onair_server
    slug = "replay-flow"
    server.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "from broadcast.services import stream_create; "
        f"stream_create(owner=User.objects.get(username={server.demo_username!r}), "
        f"title='Replay flow', slug={slug!r}, visibility='public', record=True)",
    )
    studio, viewer, late = (_page_in(browser, server, contexts) for _ in range(3))
    login(studio, server.demo_username, server.demo_password)
    viewer.goto(f"/watch/{slug}/")
    studio.goto(f"/studio/{slug}/?simulcast=0")
    studio.select_option("#resolution", "360p")
    expect(studio.locator("#rec-indicator")).to_be_hidden()

    studio.click("#go-live")

    expect(studio.locator("#rec-indicator")).to_be_visible(timeout=20_000)
    expect(studio.locator("#server-recording")).to_have_text("recording")
    expect(studio.locator("#recording-announcement")).to_have_text(
        "The server is recording this broadcast."
    )
    shown = studio.locator("#rec-elapsed").inner_text()
    expect(studio.locator("#rec-elapsed")).not_to_have_text(shown)  # its timer runs
    expect(viewer.locator("body")).to_have_attribute("data-playback", "playing")
    expect(viewer.locator("#past-broadcasts")).to_be_hidden()  # while live
    _shot(studio, "studio-recording")
    studio.wait_for_timeout(4000)  # a few seconds of recording
    studio.once("dialog", lambda dialog: dialog.accept())
    studio.click("#end-broadcast")

    expect(studio.locator("#rec-indicator")).to_be_hidden()
    expect(studio.locator("#recording-notice")).to_be_hidden()  # ended: nothing to explain
    link = viewer.locator("#replay-link")
    expect(link).to_be_visible(timeout=30_000)
    expect(viewer.locator("#recording-announcement")).to_have_text(
        "The recording of this broadcast is ready to watch."
    )
    expect(viewer.locator("#past-broadcasts .recording-item")).to_have_count(1)
    href = link.get_attribute("href") or ""
    recording_id = href.rstrip("/").rsplit("/", 1)[-1]
    _shot(viewer, "watch-ended-recording-ready")
    late.goto(f"/watch/{slug}/")
    expect(late.locator("#past-broadcasts")).to_be_visible()
    expect(late.locator("#replay-link")).to_be_visible()
    expect(late.locator("#replay-link")).to_have_attribute("href", href)

    link.click()

    viewer.wait_for_url(f"**/recordings/{recording_id}/")
    play_and_seek(viewer, recording_id)


def test_my_streams_record_switch(onair_server: OnAirServer, logged_in_page: Page) -> None:
    """The Record switch changes the stream's ``record`` through the API (PATCH), kept across
    a reload."""
    page = logged_in_page
    switch = page.locator(f'tr[data-slug="{onair_server.demo_slug}"] input[role="switch"]')
    expect(switch).to_have_accessible_name(re.compile(r"^Record “OnAir demo”$"))
    wanted = not switch.is_checked()

    with page.expect_response(lambda response: response.request.method == "PATCH" and response.ok):
        switch.set_checked(wanted)

    page.reload()
    expect(switch).to_be_checked(checked=wanted)
    with page.expect_response(lambda response: response.request.method == "PATCH"):
        switch.set_checked(not wanted)
    page.reload()
    expect(switch).to_be_checked(checked=not wanted)


def test_the_studio_says_why_recording_stopped_early(
    browser: Browser,
    tmp_path: Path,
    contexts: list[BrowserContext],
    login: Callable[[Page, str, str], None],
) -> None:
    """#21 acceptance 4 in the studio: past ONAIR_RECORDING_MAX_BYTES the recording stops, the
    studio says why and that the broadcast goes on, and its viewer plays on."""
    with running_server(
        tmp_path, ONAIR_RECORD_BY_DEFAULT="1", ONAIR_RECORDING_MAX_BYTES="100000"
    ) as server:
        studio, viewer = (_page_in(browser, server, contexts) for _ in range(2))
        login(studio, server.demo_username, server.demo_password)
        viewer.goto(f"/watch/{server.demo_slug}/")
        studio.goto(f"/studio/{server.demo_slug}/?simulcast=0")
        studio.select_option("#resolution", "360p")

        studio.click("#go-live")

        expect(studio.locator("#rec-indicator")).to_be_visible(timeout=20_000)
        notice = studio.locator("#recording-notice")
        stopped = re.compile(
            r"^Recording stopped: it reached the size limit\. (The .*\. )?The broadcast goes on\.$"
        )
        expect(notice).to_have_text(stopped, timeout=30_000)
        expect(studio.locator("#rec-indicator")).to_be_hidden()
        expect(studio.locator("#server-recording")).to_have_text("on")
        expect(studio.locator("#stream-state")).to_have_text("live")
        frames = viewer.evaluate(DECODED)
        viewer.wait_for_function(f"() => ({DECODED})() > {frames}")  # plays on
        _shot(studio, "studio-recording-stopped")
        # a studio opened now says it too
        studio.reload()
        expect(notice).to_have_text(stopped)
    assert log_errors(server.log()) == [], server.log()[-4000:]
