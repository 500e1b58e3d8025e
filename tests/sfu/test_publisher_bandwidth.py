"""The estimate the SFU gives a publisher (REMB, ``sfu.publisher_bandwidth``): the publish
ceiling from its first packet on, listing its media SSRCs, lowered on the loss the SFU sees
and grown back when it stops; aiortc's own receive-side estimate is never sent."""

import random
from collections.abc import Callable

import pytest
from aiortc import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_APP, AnyRtcpPacket, RtcpPsfbPacket, unpack_remb_fci

from sfu import PublisherPeer, Router, aiortc_adapter
from sfu.publisher_bandwidth import (
    GROWTH_PER_SECOND,
    LOSS_WINDOW_PACKETS,
    MIN_BITRATE,
    LossBasedRate,
    with_start_bitrate,
)
from testpeers import TestClients, TestPublisher, aiortc_hooks, wait_until

CEILING = 2_000_000


class _Feed:
    """One SSRC's cumulative counters, grown window by window into a ``LossBasedRate``."""

    def __init__(self, rate: LossBasedRate) -> None:
        self.rate = rate
        self.expected = self.received = 0
        self.now = 0.0
        rate.update({1: (0, 0)}, self.now)

    def windows(self, *windows: tuple[int, int], seconds: float = 1.0) -> None:
        """Each (expected, received) more over ``seconds``: one judged window each."""
        for more_expected, more_received in windows:
            self.expected += more_expected
            self.received += more_received
            self.now += seconds
            assert self.rate.update({1: (self.expected, self.received)}, self.now)


def test_the_estimate_starts_at_the_ceiling_and_holds_it_without_loss() -> None:
    rate = LossBasedRate(CEILING)
    assert rate.bitrate == CEILING
    _Feed(rate).windows(*[(100, 100)] * 5)
    assert rate.bitrate == CEILING


def test_over_10_percent_loss_cuts_by_half_the_loss_under_2_percent_grows_8_percent_a_second() -> (
    None
):
    rate = LossBasedRate(CEILING)
    feed = _Feed(rate)
    feed.windows((100, 70))  # 30 % lost
    assert rate.bitrate == pytest.approx(CEILING * 0.85)
    feed.windows((100, 95))  # 5 %: held
    assert rate.bitrate == pytest.approx(CEILING * 0.85)
    feed.windows((100, 99), seconds=2.0)  # 1 %: grows, by the window's length
    assert rate.bitrate == pytest.approx(CEILING * 0.85 * GROWTH_PER_SECOND**2)
    feed.windows(*[(100, 100)] * 3)  # and stops at the ceiling
    assert rate.bitrate == CEILING


def test_a_window_waits_for_enough_packets_and_never_goes_under_the_floor() -> None:
    rate = LossBasedRate(CEILING)
    rate.update({1: (0, 0)}, 0.0)
    few = LOSS_WINDOW_PACKETS - 1
    assert not rate.update({1: (few, 0)}, 1.0)  # every packet lost, but too few to judge
    assert rate.bitrate == CEILING
    assert rate.update({1: (few + 1, 0)}, 1.5)
    assert rate.bitrate == CEILING / 2
    feed = _Feed(rate)
    feed.expected = feed.received = few + 1
    feed.now = 1.5
    feed.windows(*[(100, 0)] * 20)
    assert rate.bitrate == MIN_BITRATE


def test_several_ssrcs_count_together_and_duplicates_are_no_gain() -> None:
    rate = LossBasedRate(CEILING)
    rate.update({1: (0, 0), 2: (0, 0)}, 0.0)
    # 300 expected on one, 100 on the other, 60 lost in all: 15 %
    assert rate.update({1: (300, 240), 2: (100, 100)}, 1.0)
    assert rate.bitrate == pytest.approx(CEILING * (1 - 0.5 * 0.15))
    # a third stream appearing counts from its first packet
    assert rate.update({1: (400, 340), 2: (200, 210), 3: (50, 50)}, 2.0)
    assert rate.last_loss == 0.0


Rembs = list[tuple[int, list[int]]]


async def _publish(
    router: Router, clients: TestClients
) -> tuple[TestPublisher, PublisherPeer, Rembs]:
    """A test publisher on ``router``, retransmitting with RTX as browsers do, and the
    REMBs it gets: (bit/s, sorted SSRCs)."""
    publisher = TestPublisher(rtx=True)
    clients.publishers.append(publisher)
    offer = await publisher.create_offer()
    rembs: Rembs = []

    async def on_rtcp(packet: AnyRtcpPacket) -> bool:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            bitrate, ssrcs = unpack_remb_fci(packet.fci)
            rembs.append((bitrate, sorted(ssrcs)))
        return False

    aiortc_adapter.intercept_sender_rtcp(_sender(publisher, "video"), on_rtcp)
    session = await router.publish(offer)
    await publisher.accept_answer(session.answer_sdp)
    return publisher, session, rembs


def _sender(publisher: TestPublisher, kind: str) -> RTCRtpSender:
    return next(s for s in publisher.pc.getSenders() if s.track and s.track.kind == kind)


async def test_a_publisher_gets_the_ceiling_from_its_first_packets_listing_its_ssrcs(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    publisher, session, rembs = await _publish(new_router(publish_max_bitrate=CEILING), clients)
    assert "a=fmtp:97 x-google-start-bitrate=2000" in session.answer_sdp.split("\r\n")
    assert await wait_until(lambda: len(rembs) >= 3, within=5.0)
    ssrcs = sorted(
        aiortc_adapter.sender_ssrcs(_sender(publisher, k))[0] for k in ("video", "audio")
    )
    assert rembs[0] == (CEILING, ssrcs)
    # only the SFU's estimate: aiortc's receive-side one (from a few hundred kbit/s) is off
    assert all(bitrate == CEILING for bitrate, _ in rembs)
    assert session.bandwidth is not None
    assert session.bandwidth.rembs_sent >= 3


async def test_loss_on_the_publishers_link_lowers_the_estimate_and_it_grows_back(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    publisher, _, rembs = await _publish(new_router(publish_max_bitrate=CEILING), clients)
    assert await wait_until(lambda: len(rembs) >= 1, within=5.0)
    losing = True
    drop = random.Random(20)
    # the publisher's link loses 30 % of what it sends (aiortc bundles nothing here)
    for transport in {sender.transport for sender in publisher.pc.getSenders()}:
        aiortc_hooks.hold_outgoing_media(transport, lambda: losing and drop.random() < 0.3)
    assert await wait_until(lambda: rembs[-1][0] < CEILING * 0.8, within=6.0), rembs
    lowest = rembs[-1][0]
    losing = False
    assert await wait_until(lambda: rembs[-1][0] > lowest, within=4.0), rembs


async def test_with_no_ceiling_aiortcs_estimate_is_what_the_publisher_gets(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    _, session, rembs = await _publish(new_router(publish_max_bitrate=0), clients)
    assert await wait_until(lambda: len(rembs) >= 1, within=5.0)
    assert session.bandwidth is None
    assert rembs[0][0] < CEILING / 2  # aiortc starts low


ANSWER = "\r\n".join(
    [
        "v=0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rtpmap:103 rtx/90000",
        "a=fmtp:103 apt=102",
        "",
    ]
)


def test_the_answer_gives_every_video_codec_the_ceiling_as_its_start_bitrate() -> None:
    answer = with_start_bitrate(ANSWER, 2_500_000)
    assert answer.split("\r\n") == [
        "v=0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103",
        "a=rtpmap:96 VP8/90000",
        "a=fmtp:96 x-google-start-bitrate=2500",
        "a=rtcp-fb:96 nack",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f;"
        "x-google-start-bitrate=2500",
        "a=rtpmap:103 rtx/90000",
        "a=fmtp:103 apt=102",
        "",
    ]
    assert with_start_bitrate(answer, 2_500_000) == answer
