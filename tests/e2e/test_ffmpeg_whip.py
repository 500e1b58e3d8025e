"""FFmpeg's own WHIP muxer (``-f whip``, FFmpeg ≥ 8) publishing H.264 baseline without
B-frames and Opus to a real daphne server, while an aiortc WHEP client keeps decoding: a
real client tested for longer than the ICE consent expiry, since clients differ in how they
keep ICE alive.

FFmpeg's muxer never answers the SFU's ICE consent checks; the SFU keeps a peer that still
sends media (sfu/ice_config.py), so the broadcast outlives the consent expiry (6 unanswered
checks: ≈ 30 s with aioice's 5 s interval). The publishing test's server checks consent
every second (tests/e2e/fast_consent_asgi.py), its own loop and aioice's alike, so a
publisher dropped at the expiry is dropped after ≈ 6 s: 20 s of publishing outlives the
expiry three times over, as a minute did at the 5 s interval."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import itertools
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from testpeers import TestPublisher
from tests.daphne import http_request, log_errors
from tests.e2e.conftest import OnAirServer, running_server
from tests.e2e.fast_consent_asgi import CONSENT_INTERVAL_SECONDS
from tests.e2e.test_live import _restart_demo_stream, _wait_for_frames
from tests.e2e.test_whip_whep import ThreadedPeer
from tests.signaling.http_clients import SDP

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

# Longer than three consent expiries (6 unanswered checks, CONSENT_INTERVAL_SECONDS apart).
PUBLISH_SECONDS = int(
    os.environ.get("ONAIR_FFMPEG_WHIP_SECONDS", str(20 * CONSENT_INTERVAL_SECONDS))
)


def ffmpeg_whip_command(url: str, key: str, seconds: int) -> list[str]:
    """The command docs/WHIP_WHEP.md gives, with a test source instead of a camera."""
    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel", "warning",
        "-re",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "60",
        "-tune", "zerolatency", "-preset", "veryfast", "-b:v", "1M",
        "-c:a", "libopus", "-ar", "48000", "-ac", "2",
        "-f", "whip", "-authorization", key,
        url,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fast_consent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnAirServer]:
    """daphne checking ICE consent every second (see tests/e2e/fast_consent_asgi.py)."""
    with running_server(
        tmp_path_factory.mktemp("fast-consent-server"),
        app="tests.e2e.fast_consent_asgi:application",
    ) as server:
        yield server
    assert log_errors(server.log()) == [], server.log()[-6000:]


@pytest.mark.slow
def test_ffmpeg_publishes_past_the_consent_expiry_while_a_whep_client_decodes(
    fast_consent_server: OnAirServer,
) -> None:
    server = fast_consent_server
    url = server.url(f"/whip/{server.demo_slug}")
    ffmpeg = subprocess.Popen(
        ffmpeg_whip_command(url, server.demo_stream_key, PUBLISH_SECONDS),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    viewer = None
    try:
        # FFmpeg's POST makes the stream live; until then WHEP answers 409.
        deadline = time.monotonic() + 15
        while True:
            viewer = ThreadedPeer(server, "whep").start()
            assert viewer.post is not None
            if viewer.post.status == 201 or time.monotonic() > deadline:
                break
            assert viewer.post.status == 409, viewer.post.body
            time.sleep(0.2)
        assert viewer.post.status == 201, viewer.post.body
        assert viewer.viewer is not None
        samples = []
        started = time.monotonic()
        while ffmpeg.poll() is None and time.monotonic() - started < PUBLISH_SECONDS + 10:
            time.sleep(5)
            samples.append(viewer.viewer.video.frames)
        output = ffmpeg.stdout.read().decode(errors="replace") if ffmpeg.stdout else ""
        assert ffmpeg.returncode == 0, output
        # Decoding all along: frames rose in every 5 s window but the last (FFmpeg ending).
        assert samples, output
        assert all(b > a + 60 for a, b in itertools.pairwise(samples[:-1])), samples
        assert viewer.viewer.video.frames > 25 * (PUBLISH_SECONDS - 10), samples
        assert viewer.viewer.audio.frames > 0
        assert log_errors(server.log()) == [], server.log()[-3000:]
    finally:
        if viewer is not None:
            viewer.stop()
        if ffmpeg.poll() is None:
            ffmpeg.terminate()
            ffmpeg.wait(10)


def _whip_posts(server: OnAirServer, status: int) -> int:
    """How many WHIP POSTs to the demo stream daphne's access log shows answered ``status``."""
    return server.log().count(f'"POST /whip/{server.demo_slug}" {status}')


def test_a_killed_encoder_restarted_takes_over_and_viewers_resume(
    onair_server: OnAirServer, page: Page
) -> None:
    """FFmpeg SIGKILLed (no DELETE, its session still looks connected), and started again
    with the same key 2 s later: its POST is 201 at once, and the watch page that was
    watching decodes its frames within 3 s of that POST, without reloading."""
    server = onair_server
    _restart_demo_stream(server)
    url = server.url(f"/whip/{server.demo_slug}")
    command = ffmpeg_whip_command(url, server.demo_stream_key, 60)
    encoders: list[subprocess.Popen[bytes]] = []
    try:
        accepted = _whip_posts(server, 201)
        encoders.append(subprocess.Popen(command, stderr=subprocess.PIPE))
        page.goto(f"/watch/{server.demo_slug}/")
        frames = _wait_for_frames(page, more_than=30)
        assert _whip_posts(server, 201) == accepted + 1
        page.evaluate("window.onairWatch.state.pc.seenBeforeTheCrash = true")

        encoders[0].kill()
        encoders[0].wait(5)
        time.sleep(2)  # the encoder's restart, as a process manager would do it
        frames = _wait_for_frames(page, more_than=0)  # what the page shows, frozen
        encoders.append(subprocess.Popen(command, stderr=subprocess.PIPE))
        deadline = time.monotonic() + 10
        while _whip_posts(server, 201) < accepted + 2:
            assert encoders[1].poll() is None, encoders[1].stderr.read().decode(errors="replace")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.02)
        posted = time.monotonic()
        assert _whip_posts(server, 409) == 0

        frames = _wait_for_frames(page, more_than=frames + 10, within=3.0)
        resumed = time.monotonic() - posted
        assert page.evaluate("window.onairWatch.state.pc.seenBeforeTheCrash === true")
        print(f"watch page decoding the restarted encoder {resumed:.2f} s after its POST")
    finally:
        for encoder in encoders:
            if encoder.poll() is None:
                encoder.terminate()
                encoder.wait(10)


def test_ffmpeg_ends_its_broadcast_and_reads_the_answer(onair_server: OnAirServer) -> None:
    """FFmpeg's DELETE at the end of its input ends the broadcast, and FFmpeg reads the
    answer cleanly: it printed "Failed to read response from DELETE … ret=-5" for any HTTP
    response (onair/serve.py, ``_FFMPEG_AGENT``); other clients' DELETEs get their 200
    (tests/signaling/test_whip.py)."""
    server = onair_server
    _restart_demo_stream(server)
    command = ffmpeg_whip_command(
        server.url(f"/whip/{server.demo_slug}"), server.demo_stream_key, 3
    )
    command[command.index("warning")] = "info"  # its "Dispose resource … ok" too
    ended = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert ended.returncode == 0, ended.stderr
    assert "Failed to read response from DELETE" not in ended.stderr, ended.stderr
    assert "Failed to dispose resource" not in ended.stderr, ended.stderr
    assert "Dispose resource" in ended.stderr, ended.stderr
    with urllib.request.urlopen(server.url(f"/whep/{server.demo_slug}/state"), timeout=10) as r:
        state = json.load(r)
    assert (state["state"], state["end_reason"]) == ("ended", "publisher"), state
    # The access log has the DELETE, answered 200 by the application, its token redacted.
    assert f'"DELETE /whip/{server.demo_slug}/<token>" 200' in server.log(), server.log()[-2000:]


def test_through_a_proxy_ffmpegs_delete_gets_its_200(onair_server: OnAirServer) -> None:
    """A forwarded request (a reverse proxy's): FFmpeg's DELETE is answered, as anyone's, since
    a proxy would turn the closed connection into its own 502 and an error line naming the
    session URL. Without the proxy's header, the same DELETE gets no response.

    The aiortc publishers run on an event loop of their own thread: this module's browser
    tests leave Playwright's loop current in the test thread."""
    server = onair_server
    _restart_demo_stream(server)
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _publish_twice_and_delete(server)).result(timeout=120)


async def _publish_twice_and_delete(server: OnAirServer) -> None:
    ffmpeg = {"User-Agent": "Lavf/62.3.100", "Authorization": f"Bearer {server.demo_stream_key}"}
    publishers = [TestPublisher(), TestPublisher()]
    try:
        sessions = []
        for publisher in publishers:
            created = await asyncio.to_thread(
                http_request,
                "POST",
                server.url(f"/whip/{server.demo_slug}"),
                await publisher.create_offer(),
                {"Authorization": f"Bearer {server.demo_stream_key}", "Content-Type": SDP},
                timeout=30,
            )
            assert created.status == 201, created
            sessions.append(server.url(created.headers["Location"]))
        proxied = await asyncio.to_thread(
            http_request,
            "DELETE",
            sessions[0],
            headers={**ffmpeg, "X-Forwarded-For": "192.0.2.7"},
            timeout=10,
        )
        assert proxied.status == 200
        with pytest.raises(http.client.RemoteDisconnected):
            await asyncio.to_thread(http_request, "DELETE", sessions[1], headers=ffmpeg, timeout=10)
    finally:
        for publisher in publishers:
            await publisher.close()
