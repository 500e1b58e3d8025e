"""Issue #20, acceptance 2: a viewer whose link takes less than the lowest layer keeps its
audio, sees "video paused: your connection is too slow" over the video (nothing of the
video is sent to be dropped meanwhile), and plays again by itself once its link recovers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.daphne import log_errors
from tests.quality.session import Broadcast, Window

# Below the lowest layer of any source (a simulcast quarter-resolution layer is ≈ 100 to
# 150 kbit/s) and above the audio (Opus ≈ 40 kbit/s and its headers).
STARVED_LINK_BITS = 80_000
PAUSED_NOTICE = "video paused: your connection is too slow"


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broadcast]:
    with Broadcast.start(tmp_path_factory.mktemp("layers")) as broadcast:
        yield broadcast
    assert log_errors(broadcast.server.log()) == [], broadcast.server.log()[-6000:]


def test_a_viewer_below_the_lowest_layer_keeps_audio_sees_video_paused_and_resumes(
    broadcast: Broadcast,
) -> None:
    weak = broadcast.add_viewer("weak")
    notice = weak.page.locator("#video-paused")
    expect(notice).to_be_hidden()

    weak.link.set_rate(STARVED_LINK_BITS)
    dropped_at = time.monotonic()
    expect(notice).to_be_visible(timeout=20_000)
    paused_after = time.monotonic() - dropped_at
    expect(notice).to_have_text(PAUSED_NOTICE)
    weak.page.wait_for_timeout(2000)  # the queue in front of the link drains
    paused = Window.over(broadcast.sample(6, [weak])["weak"])
    # the audio goes on; the video is not sent (the probes' padding is, now and then)
    assert paused.audio_packets >= 6 * 25, paused
    assert paused.fps < 1, paused
    assert paused.link_kbps < STARVED_LINK_BITS / 1000 * 1.5, paused

    weak.link.set_rate(None)
    lifted_at = time.monotonic()
    expect(notice).to_be_hidden(timeout=60_000)
    resumed_after = time.monotonic() - lifted_at
    playing = Window.over(broadcast.sample(4, [weak])["weak"])
    assert playing.fps >= 10, playing
    print(
        f"paused {paused_after:.1f} s after the link fell to {STARVED_LINK_BITS // 1000} kbit/s"
        f" (sent {paused.link_kbps:.0f} kbit/s, {paused.audio_packets / paused.seconds:.0f}"
        f" audio packets/s while paused); resumed {resumed_after:.1f} s after it was lifted,"
        f" then {playing.fps:.0f} fps at {playing.frame_height}p"
    )
