"""Issue #20, acceptance 2: a viewer whose link is below the lowest layer's rate keeps its
audio, sees "video paused: your connection is too slow", and plays again once the link
recovers."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.quality.session import Broadcast, Window

# Below the studio's lowest layer (and the single-layer stream from its first seconds),
# above its audio.
SLOW_LINK_BITS = 150_000


def test_a_viewer_below_the_lowest_layer_keeps_audio_and_resumes(broadcast: Broadcast) -> None:
    slow = broadcast.add_viewer("slow")
    broadcast.wait_for_publisher_kbps(SLOW_LINK_BITS * 2 / 1000, within=30)
    notice = slow.page.locator("#video-paused")

    slow.link.set_rate(SLOW_LINK_BITS)
    expect(notice).to_be_visible(timeout=30_000)
    expect(notice).to_have_text("video paused: your connection is too slow")
    paused = Window.over(broadcast.sample(4, [slow])["slow"])
    assert paused.paused_seconds == 4
    assert paused.audio_packets >= 4 * 25, f"{paused.audio_packets} audio packets in 4 s"
    # what the SFU sends toward it now fits its link: nothing piles up and drops there
    assert paused.link_kbps * 1000 < SLOW_LINK_BITS

    slow.link.set_rate(None)
    expect(notice).to_be_hidden(timeout=30_000)
    playing = Window.over(broadcast.sample(3, [slow])["slow"])
    assert playing.fps >= 5, f"{playing.fps:.1f} fps after the link recovered"
    assert playing.audio_packets >= 3 * 25
    broadcast.remove_viewer(slow)
