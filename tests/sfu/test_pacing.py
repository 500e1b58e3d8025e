"""Pacing a viewer's RTP (``DirectRtpSender.set_pacing_rate``), with real aiortc peers: a
paced viewer receives at most the rate plus a small burst, in order, and the pacer drops
its oldest frames rather than holding more than a short queue; a rate above the stream's
loses nothing; lifting the pacing hands the viewer back to the C loop."""

import asyncio
import itertools

import pytest

from sfu import Router, RouterOptions, aiortc_adapter, rtp_sender
from sfu.downtrack import DownTrack
from sfu.quality import QualityOptions
from testpeers import TestClients, TestViewer, aiortc_hooks, wait_until
from tests.sfu.forwarding_loop import C_LOOP, options

PACKET_ALLOWANCE = 1300  # one packet may overdraw the tokens


@pytest.fixture
def router_options() -> RouterOptions:
    """The pacer alone: no layer choice, whose pause of a viewer losing what the pacer drops
    would stop what these tests measure (the choice sets the rate in the SFU)."""
    return options(
        stats_interval_seconds=0,
        publisher_grace_seconds=5.0,
        quality=QualityOptions(auto_layers=False),
    )


class Arrivals:
    """The video RTP (media and RTX) a viewer's transport received: (loop time, bytes)."""

    def __init__(self, viewer: TestViewer, down_track: DownTrack) -> None:
        self.ssrcs = set(aiortc_adapter.sender_ssrcs(down_track.sender))
        self.seen: list[tuple[float, int]] = []
        loop = asyncio.get_running_loop()
        transport = viewer.pc.getTransceivers()[1].receiver.transport

        def keep(data: bytes) -> bool:
            if int.from_bytes(data[8:12], "big") in self.ssrcs:
                self.seen.append((loop.time(), len(data)))
            return True

        aiortc_hooks.filter_incoming_rtp(transport, keep)

    async def bytes_within(self, seconds: float) -> int:
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(seconds)
        return sum(size for at, size in self.seen if at >= start)


async def _paced_viewer(
    router: Router, clients: TestClients
) -> tuple[TestViewer, DownTrack, rtp_sender.DirectRtpSender, Arrivals]:
    await clients.publish(router)
    viewer, session = await clients.subscribe(router, decode=False, record_rtp=True)
    assert await viewer.wait_for_frames(video=10)
    video = next(track for track in session.down_tracks if track.kind == "video")
    assert video.rtp_sender is not None
    return viewer, video, video.rtp_sender, Arrivals(viewer, video)


async def test_a_paced_viewer_receives_at_the_rate_and_the_oldest_frames_are_dropped(
    router: Router, clients: TestClients
) -> None:
    viewer, video, sender, arrivals = await _paced_viewer(router, clients)
    stream_bits = await arrivals.bytes_within(1.0) * 8
    rate = stream_bits / 3  # a third of the stream fits
    sender.set_pacing_rate(rate)
    assert sender.pacing_rate == rate
    await asyncio.sleep(0.5)  # the C loop's target goes on the down track's upkeep
    assert not video.forwarded_natively
    seconds = 2.0
    received = await arrivals.bytes_within(seconds)
    burst = max(rate / 8 * rtp_sender.PACING_BURST_SECONDS, rtp_sender.PACING_BURST_MIN_BYTES)
    print(
        f"stream {stream_bits / 1000:.0f} kbit/s, paced at {rate / 1000:.0f} kbit/s:"
        f" {received * 8 / seconds / 1000:.0f} kbit/s received,"
        f" {sender.paced_dropped_packets} packets dropped by the pacer"
    )
    # the token bucket's bound (one burst, one overdrawn packet, one more of each for the
    # packets in flight at the window's edges); a loaded loop only sends less
    assert received <= rate / 8 * seconds + 2 * (burst + PACKET_ALLOWANCE)
    assert received >= 0.3 * rate / 8 * seconds  # it does send, paced
    # the queue stays short: what does not fit is dropped, oldest frames first
    assert sender.paced_dropped_packets > 0
    assert sender.paced_queue_bytes <= rate / 8 * rtp_sender.PACING_QUEUE_SECONDS
    # what arrives is in order, but for the viewer's repairs (RTX) of what the pacer dropped
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 5)


async def test_pacing_above_the_stream_rate_loses_nothing_and_lifting_it_returns_to_the_c_loop(
    router: Router, clients: TestClients
) -> None:
    viewer, video, sender, arrivals = await _paced_viewer(router, clients)
    stream_bits = await arrivals.bytes_within(1.0) * 8
    sender.set_pacing_rate(stream_bits * 4)
    first = len(viewer.video.sequence_numbers)
    await asyncio.sleep(2.0)
    assert not video.forwarded_natively
    sender.set_pacing_rate(None)
    assert sender.pacing_rate is None
    assert sender.paced_queue_bytes == 0  # what was queued left at once
    received = viewer.video.sequence_numbers[first:]
    assert sender.paced_dropped_packets == 0
    assert len(received) > 20
    # every packet arrived, in order (16-bit wrap aside)
    steps = {(later - earlier) & 0xFFFF for earlier, later in itertools.pairwise(received)}
    assert steps == {1}
    if C_LOOP:
        assert await wait_until(lambda: video.forwarded_natively, within=5)
    frames = viewer.video.frames
    assert await viewer.wait_for_frames(video=frames + 10)
