"""Viewers' RTCP feedback: NACKs answered from the cache within each viewer's budget, PLI
storms throttled."""

import asyncio
import itertools
import random
import time
from collections.abc import Callable

import pytest
from aiortc.rtp import RtpPacket

from sfu import Router, aiortc_adapter
from sfu.downtrack import DownTrack
from testpeers import DecodeErrorCounter, TestClients, TestViewer, aiortc_hooks, wait_until
from tests.sfu.forwarding_loop import C_LOOP


def _unwrapped(sequence_numbers: list[int]) -> list[int]:
    """16-bit RTP sequence numbers as they arrived, made monotonic across wraps."""
    out: list[int] = []
    for number in sequence_numbers:
        if not out:
            out.append(number)
            continue
        step = (number - out[-1]) & 0xFFFF
        out.append(out[-1] + (step if step < 0x8000 else step - 0x10000))
    return out


def _missing(sequence_numbers: list[int], first: int, last: int) -> list[int]:
    """Which of ``first``..``last`` (unwrapped) never arrived."""
    received = set(sequence_numbers)
    return [n for n in range(first, last + 1) if n not in received]


class _LossyLink:
    """A viewer's video downlink losing ``ratio`` of the first ``packets`` packets of its
    stream and of their resends (RTX), chosen by their place in the stream (offset from the
    first packet it saw, and which resend): the same packets however fast the machine runs,
    where one draw per arrival loses others as audio and video interleave differently. It
    records, by offset, what it lost and what the SFU resent."""

    def __init__(
        self, viewer: TestViewer, down_track: DownTrack, *, ratio: float, packets: int
    ) -> None:
        self._ssrc, self._rtx_ssrc = aiortc_adapter.sender_ssrcs(down_track.sender)
        self._ratio = ratio
        self.packets = packets
        self.first: int | None = None
        self.past = False  # a packet after the first ``packets`` arrived
        self.lost: set[int] = set()
        self.resent: dict[int, int] = {}  # how many times each was resent
        self.resends_lost: dict[int, int] = {}  # how many of those this link lost
        transceiver = next(t for t in viewer.pc.getTransceivers() if t.kind == "video")
        aiortc_hooks.filter_incoming_rtp(transceiver.receiver.transport, self._keep)

    def offset(self, sequence_number: int) -> int:
        assert self.first is not None
        return (sequence_number - self.first) & 0xFFFF

    @property
    def unrepaired(self) -> set[int]:
        """The packets it lost every resend of too."""
        return {n for n in self.lost if 0 < self.resent.get(n, 0) == self.resends_lost.get(n)}

    def _loses(self, *place: int) -> bool:
        return random.Random(f"lossy link {place}").random() < self._ratio

    def _keep(self, data: bytes) -> bool:
        ssrc = int.from_bytes(data[8:12], "big")
        if ssrc == self._ssrc:
            if self.first is None:
                self.first = int.from_bytes(data[2:4], "big")
            offset = self.offset(int.from_bytes(data[2:4], "big"))
            if offset >= self.packets:
                self.past = True
                return True
            if self._loses(offset):
                self.lost.add(offset)
                return False
            return True
        if ssrc != self._rtx_ssrc or self.first is None:
            return True
        payload = RtpPacket.parse(data).payload
        if len(payload) < 2:  # a probe's padding
            return True
        offset = self.offset(int.from_bytes(payload[:2], "big"))  # the original's number
        if offset >= self.packets:
            return True
        resend = self.resent.get(offset, 0) + 1
        self.resent[offset] = resend
        if self._loses(offset, resend):
            self.resends_lost[offset] = self.resends_lost.get(offset, 0) + 1
            return False
        return True


async def test_a_viewer_losing_5_percent_gets_every_lost_packet_back_within_its_budget(
    router: Router, clients: TestClients
) -> None:
    with DecodeErrorCounter().installed() as decode_errors:
        await clients.publish(router)
        viewer, session = await clients.subscribe(router, record_rtp=True)
        assert await viewer.wait_for_frames(video=5)
        down_track = next(t for t in session.down_tracks if t.kind == "video")
        frames_before = viewer.video.frames
        link = _LossyLink(viewer, down_track, ratio=0.05, packets=240)  # about 4 s of it
        assert await wait_until(lambda: link.past, within=60)
        # the last losses are asked for on the next packet's arrival
        await wait_until(lambda: link.lost <= link.resent.keys(), within=5)

    video = down_track.stats()
    arrived = {link.offset(n) for n in viewer.video.sequence_numbers}
    missing = {n for n in range(link.packets) if n not in arrived}
    print(
        f"5% loss of {link.packets} packets: {len(link.lost)} lost, {len(link.resent)} "
        f"resent, {sum(link.resends_lost.values())} resends lost, {len(missing)} never "
        f"arrived; the SFU: {video.nacks_received} NACKed, {video.retransmitted_packets} "
        f"retransmitted, {video.nack_misses} misses, {video.nacks_refused} refused; "
        f"{viewer.video.frames - frames_before} frames decoded, {decode_errors.errors} "
        "decode errors"
    )
    assert len(link.lost) >= 5
    # every packet the viewer asked for was resent (aiortc asks for each gap it sees)
    assert link.lost <= link.resent.keys()
    # and came back, but where each resend was lost too: aiortc asks again only on its next
    # gap, which may come after the packet's age limit (the SFU then rightly declines)
    assert missing <= link.unrepaired
    assert decode_errors.errors <= 2


@pytest.fixture(params=["c_loop", "python_loop"])
def forwarding_loop(request: pytest.FixtureRequest) -> str:
    """Each test using it runs with the C forwarding loop and with the Python one
    (``RouterOptions.native_forwarding``)."""
    if request.param == "c_loop" and not C_LOOP:
        pytest.skip("the C loop is off (ONAIR_NATIVE_FORWARDING=0) or not built (make native)")
    return str(request.param)


async def _flood_nacks(viewer: TestViewer, count: int, per_second: float) -> None:
    """NACK the viewer's last 1,000 video packets, ``count`` times, ``per_second`` times
    a second (or as fast as this machine gets round to it)."""
    for _ in range(count):
        newest = viewer.video.sequence_numbers[-1]
        assert await viewer.send_nack([(newest - n) & 0xFFFF for n in range(999, -1, -1)])
        await asyncio.sleep(1 / per_second)


async def test_a_nack_flood_is_answered_within_the_budget_and_other_viewers_are_untouched(
    forwarding_loop: str, new_router: Callable[..., Router], clients: TestClients
) -> None:
    router = new_router(publisher_grace_seconds=5.0, native_forwarding=forwarding_loop == "c_loop")
    limits = router.options.retransmission
    with DecodeErrorCounter().installed() as decode_errors:
        await clients.publish(router)
        joined = time.monotonic()
        flooder, flooder_session = await clients.subscribe(router, decode=False, record_rtp=True)
        viewer, viewer_session = await clients.subscribe(router, record_rtp=True)
        assert await flooder.wait_for_frames(video=5)
        assert await viewer.wait_for_frames(video=5)
        await asyncio.sleep(2.0)  # a few hundred packets in the cache to ask for
        frames_before = viewer.video.frames
        first = len(viewer.video.sequence_numbers)
        nacks = 264  # ≈ 3 s of them
        flood_started = time.monotonic()
        await _flood_nacks(flooder, nacks, 88)
        seconds = time.monotonic() - flood_started
        await asyncio.sleep(0.5)  # the last answers arrive
        elapsed = time.monotonic() - joined

    flooded = next(c for c in flooder_session.down_tracks if c.kind == "video").stats()
    normal = next(c for c in viewer_session.down_tracks if c.kind == "video").stats()
    # what the budget can ever have earned: full at the start, then its share of what was
    # forwarded and its floor rate over the whole time (an upper bound however slow the run)
    budget = (
        limits.burst_packets
        + limits.share * flooded.packets_sent
        + limits.packets_per_second * elapsed
    )
    frames = viewer.video.frames - frames_before
    received = _unwrapped(viewer.video.sequence_numbers)[first:]
    missing = _missing(received, min(received), max(received))
    print(
        f"[{forwarding_loop}] {nacks} NACKs of 1,000 packets in {seconds:.1f} s: "
        f"{flooded.retransmitted_packets} retransmitted (budget {budget:.0f}), "
        f"{flooded.nacks_refused} refused, {flooded.nack_misses} misses, "
        f"{flooded.packets_sent} forwarded; the other viewer: {frames} frames decoded, "
        f"{len(missing)} packets missing, {normal.nacks_received} NACKed, "
        f"{decode_errors.errors} decode errors"
    )
    assert 0 < flooded.retransmitted_packets <= budget
    assert flooded.nacks_received >= nacks * 64  # what aiortc and the budget read of each
    assert flooded.nacks_refused > flooded.nacks_received * 0.9  # nearly all of it
    assert flooded.retransmitted_packets + flooded.nack_misses + flooded.nacks_refused == (
        flooded.nacks_received
    )
    assert missing == []
    assert frames >= 30 * seconds * 0.5
    assert decode_errors.errors <= 2


async def _storm(viewer: TestViewer, per_second: float, until: float) -> int:
    sent = 0
    while time.monotonic() < until:
        sent += await viewer.send_pli()
        await asyncio.sleep(1 / per_second)
    return sent


async def test_a_pli_storm_reaches_the_publisher_at_most_once_per_second(
    router: Router, clients: TestClients
) -> None:
    publisher, _ = await clients.publish(router, fps=15)
    viewers = [(await clients.subscribe(router, decode=False))[0] for _ in range(20)]
    assert all(await asyncio.gather(*(v.wait_for_frames(video=5) for v in viewers)))
    await asyncio.sleep(1.0)  # let the joins' own keyframe requests drain

    video = next(p for p in router.producers if p.kind == "video")
    requests_before = video.stats().keyframe_requests
    seconds = 5.0
    started = time.monotonic()
    sent = sum(await asyncio.gather(*(_storm(v, 10, started + seconds) for v in viewers)))
    await asyncio.sleep(0.2)  # the last deferred request
    elapsed = time.monotonic() - started

    upstream = [t for t in publisher.keyframe_requests if t >= started]
    spacing = [b - a for a, b in itertools.pairwise(upstream)]
    received = video.stats().keyframe_requests - requests_before
    print(
        f"PLI storm: {sent} PLIs sent by 20 viewers in {elapsed:.1f} s, {received} reached "
        f"the producer, {len(upstream)} keyframe requests reached the publisher, "
        f"spaced {min(spacing):.2f}-{max(spacing):.2f} s"
    )
    assert sent >= 20 * 10 * seconds * 0.8
    assert received >= sent * 0.9
    assert len(upstream) <= elapsed + 1
    assert len(upstream) >= seconds - 1
    assert min(spacing) > 0.9
