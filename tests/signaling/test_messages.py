import json

import pytest

from signaling.messages import (
    MAX_FRAME_BYTES,
    STUDIO_TYPES,
    WATCH_TYPES,
    Answer,
    Auth,
    Candidate,
    End,
    Media,
    MessageError,
    Offer,
    Quality,
    parse_message,
)


def parse(payload: object, allowed: frozenset[str] = STUDIO_TYPES):
    return parse_message(json.dumps(payload), None, allowed=allowed)


def error_code(text: str | None, bytes_data: bytes | None = None) -> str:
    with pytest.raises(MessageError) as caught:
        parse_message(text, bytes_data, allowed=STUDIO_TYPES)
    assert caught.value.message  # every refusal carries a sentence for people
    return caught.value.code


def test_valid_studio_messages() -> None:
    assert parse({"type": "offer", "sdp": "v=0\r\n"}) == Offer(sdp="v=0\r\n")
    assert parse({"type": "auth", "key": "sk_live_abc"}) == Auth(key="sk_live_abc")
    assert parse({"type": "end"}) == End()
    assert parse(
        {
            "type": "candidate",
            "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0"},
        }
    ) == Candidate(
        candidate="candidate:1 1 udp 1 1.2.3.4 5 typ host", sdp_mid="0", sdp_mline_index=None
    )


def test_end_of_candidates_is_null() -> None:
    assert parse({"type": "candidate", "candidate": None}) == Candidate("", None, None)


def test_watch_accepts_answers_and_offers_but_not_studio_commands() -> None:
    assert parse({"type": "answer", "sdp": "v=0"}, WATCH_TYPES) == Answer(sdp="v=0")
    assert parse({"type": "offer", "sdp": "v=0"}, WATCH_TYPES) == Offer(sdp="v=0")
    for studio_only in ("end", "auth"):
        with pytest.raises(MessageError) as caught:
            parse({"type": studio_only, "key": "k" * 40}, WATCH_TYPES)
        assert caught.value.code == "unknown_type"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"sdp": "x"}', "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "offer"}', "bad_message"),
        ('{"type": "offer", "sdp": ""}', "bad_message"),
        ('{"type": "auth", "key": 12}', "bad_message"),
        ('{"type": "candidate", "candidate": "x"}', "bad_message"),
        (
            '{"type": "candidate", "candidate": {"candidate": "a", "sdpMLineIndex": -1}}',
            "bad_message",
        ),
        ('{"type": "candidate", "candidate": {"candidate": "a"}}', "bad_message"),
    ],
)
def test_invalid_frames_get_a_code(text: str, code: str) -> None:
    assert error_code(text) == code


def test_oversized_and_binary_frames_are_refused() -> None:
    huge = json.dumps({"type": "offer", "sdp": "a" * MAX_FRAME_BYTES})
    assert error_code(huge) == "too_large"
    assert error_code(None, b"\x00\x01") == "bad_json"


def test_a_viewer_chooses_a_layer_by_index_or_auto_with_null() -> None:
    assert parse({"type": "quality", "layer": 2}, WATCH_TYPES) == Quality(layer=2)
    assert parse({"type": "quality", "layer": None}, WATCH_TYPES) == Quality(layer=None)
    assert parse({"type": "quality"}, WATCH_TYPES) == Quality(layer=None)
    for bad in (-1, 16, 1.5, "1", True):
        with pytest.raises(MessageError) as caught:
            parse({"type": "quality", "layer": bad}, WATCH_TYPES)
        assert caught.value.code == "bad_message"
    with pytest.raises(MessageError) as caught:
        parse({"type": "quality", "layer": 0})  # not a studio message
    assert caught.value.code == "unknown_type"


def test_media_is_two_booleans_and_an_offer_may_carry_it() -> None:
    assert parse({"type": "media", "mic_muted": True, "camera_off": False}) == Media(
        mic_muted=True, camera_off=False
    )
    sdp = "v=0\r\n"
    assert parse({"type": "offer", "sdp": sdp}) == Offer(sdp=sdp, media=None)
    assert parse(
        {"type": "offer", "sdp": sdp, "media": {"mic_muted": False, "camera_off": True}}
    ) == Offer(sdp=sdp, media=Media(mic_muted=False, camera_off=True))
    for bad in (
        {"type": "media"},
        {"type": "media", "mic_muted": 1, "camera_off": False},
        {"type": "media", "mic_muted": True, "camera_off": "off"},
        {"type": "offer", "sdp": sdp, "media": "muted"},
        {"type": "offer", "sdp": sdp, "media": {"mic_muted": True}},
    ):
        with pytest.raises(MessageError) as caught:
            parse(bad)
        assert caught.value.code == "bad_message"
        assert '"mic_muted" and "camera_off"' in caught.value.message
    with pytest.raises(MessageError) as caught:
        parse({"type": "media", "mic_muted": True, "camera_off": True}, WATCH_TYPES)
    assert caught.value.code == "unknown_type"
