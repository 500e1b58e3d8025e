"""sfu.simulcast: what a publisher's offer sends as simulcast, and the answer lines that
accept it; a real Chromium offer (three encodings, rids q/h/f) among them."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc.sdp import SessionDescription

from sfu import NegotiationError, Router
from sfu.negotiation import offered_media
from sfu.simulcast import (
    MAX_SIMULCAST_LAYERS,
    REPAIRED_RTP_STREAM_ID_URI,
    RTP_STREAM_ID_URI,
    SimulcastOffer,
    answer_simulcast,
    media_sections,
    offered_simulcast,
)

# captured from Chromium 156: getUserMedia 1280x720, audio, and sendEncodings q (1/4), h
# (1/2), f, as the studio page sends them
CHROMIUM_OFFER = (
    (Path(__file__).parent / "sdp" / "chromium_vp8_simulcast_offer.sdp").read_bytes().decode()
)


def _with_video_lines(offer: str, old: str, new: str) -> str:
    assert old in offer
    return offer.replace(old, new)


def _simulcast_line(streams: str) -> str:
    return _with_video_lines(CHROMIUM_OFFER, "a=simulcast:send q;h;f", f"a=simulcast:{streams}")


def test_chromiums_offer_sends_three_layers_in_its_order() -> None:
    audio, video = offered_simulcast(CHROMIUM_OFFER)
    assert audio is None
    assert video == SimulcastOffer(
        rids=("q", "h", "f"), paused=frozenset(), rid_extension=10, repaired_rid_extension=11
    )
    media = offered_media(CHROMIUM_OFFER)
    assert [(m.kind, m.index, m.simulcast) for m in media] == [
        ("audio", 0, None),
        ("video", 1, video),
    ]


def test_an_offer_without_simulcast_has_none() -> None:
    plain = "\r\n".join(
        line
        for line in CHROMIUM_OFFER.splitlines()
        if not line.startswith(("a=rid:", "a=simulcast:"))
    )
    assert offered_simulcast(plain) == [None, None]


@pytest.mark.parametrize(
    ("streams", "rids", "paused"),
    [
        ("send q;~h;f", ("q", "h", "f"), {"h"}),  # paused: kept, marked so in the answer
        ("send q,h;f", ("q", "f"), set()),  # alternatives: the first of each
        ("recv x send f;h;q", ("f", "h", "q"), set()),  # either order of send and recv
    ],
)
def test_paused_rids_alternatives_and_recv_parts(
    streams: str, rids: tuple[str, ...], paused: set[str]
) -> None:
    video = offered_simulcast(_simulcast_line(streams))[1]
    assert video is not None
    assert video.rids == rids
    assert video.paused == paused


def test_an_offer_that_only_receives_simulcast_sends_none() -> None:
    assert offered_simulcast(_simulcast_line("recv q;h;f"))[1] is None


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        (_simulcast_line("send a;b;c;d;e"), f"at most {MAX_SIMULCAST_LAYERS}"),
        (_simulcast_line("send q;h;q"), "names rid 'q' twice"),
        (_simulcast_line("send q;h;f;x"), "rid 'x' has no a=rid:x send"),
        (_simulcast_line("send q;h;" + "f" * 17), "1 to 16 letters"),
        (_simulcast_line("send q;h;f!"), "1 to 16 letters"),
        (
            _with_video_lines(CHROMIUM_OFFER, f"a=extmap:10 {RTP_STREAM_ID_URI}\r\n", ""),
            "needs the urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id header extension",
        ),
        (
            _with_video_lines(
                CHROMIUM_OFFER,
                f"a=extmap:10 {RTP_STREAM_ID_URI}",
                f"a=extmap:4 {RTP_STREAM_ID_URI}",
            ),
            "header extension id 4 names two extensions",
        ),
    ],
)
def test_an_unusable_simulcast_offer_is_refused_with_its_reason(offer: str, message: str) -> None:
    with pytest.raises(NegotiationError, match=message):
        offered_simulcast(offer)


def test_a_thousand_rids_are_refused_before_anything_is_made() -> None:
    rids = [f"r{i}" for i in range(1000)]
    offer = _with_video_lines(
        _simulcast_line("send " + ";".join(rids)),
        "a=rid:q send",
        "\r\n".join(f"a=rid:{rid} send" for rid in rids),
    )
    with pytest.raises(NegotiationError, match="1000 layers"):
        offered_simulcast(offer)


def test_the_answer_accepts_each_rid_in_the_offers_order() -> None:
    answer = "v=0\r\ns=-\r\nm=audio 9 x 111\r\na=mid:0\r\nm=video 9 x 96\r\na=mid:1\r\n"
    offer = SimulcastOffer(
        rids=("q", "h", "f"), paused=frozenset({"h"}), rid_extension=10, repaired_rid_extension=11
    )
    munged = answer_simulcast(answer, {1: offer})
    audio, video = media_sections(munged)
    assert audio == ["m=audio 9 x 111", "a=mid:0"]
    assert video == [
        "m=video 9 x 96",
        "a=mid:1",
        f"a=extmap:10 {RTP_STREAM_ID_URI}",
        f"a=extmap:11 {REPAIRED_RTP_STREAM_ID_URI}",
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;~h;f",
    ]
    assert munged.endswith("\r\n")
    assert answer_simulcast(answer, {}) == answer


async def test_the_routers_answer_to_chromium_takes_its_simulcast(router: Router) -> None:
    session = await router.publish(CHROMIUM_OFFER)
    assert [(t.kind, [p.rid for p in t.offered_layers]) for t in session.tracks] == [
        ("audio", [None]),
        ("video", ["q", "h", "f"]),
    ]
    video = SessionDescription.parse(session.answer_sdp).media[1]
    uris = {e.uri: e.id for e in video.rtp.headerExtensions}
    assert uris[RTP_STREAM_ID_URI] == 10
    assert uris[REPAIRED_RTP_STREAM_ID_URI] == 11
    lines = media_sections(session.answer_sdp)[1]
    assert [line for line in lines if line.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;h;f",
    ]
    # VP8 and its retransmissions, as without simulcast
    assert [c.mimeType for c in video.rtp.codecs] == ["video/VP8", "video/rtx"]
