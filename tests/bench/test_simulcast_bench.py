"""bench.simulcast's pieces that need no server: reading a keyframe's picture size, placing a
viewer on a layer by its rate, and the report's one paragraph."""

import datetime

from aiortc.codecs.vpx import Vp8Encoder
from av import VideoFrame

from bench import simulcast
from bench.measure import ServerResult
from bench.switch_viewer import keyframe_width


def _encoded(width: int, height: int, keyframe: bool) -> list[bytes]:
    encoder = Vp8Encoder()
    frame = VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.pts = 0
    payloads, _ = encoder.encode(frame, keyframe)
    if not keyframe:
        frame.pts = 1
        payloads, _ = encoder.encode(frame, False)
    return payloads


def test_a_keyframes_first_payload_gives_its_width_and_nothing_else_does() -> None:
    for width, height in ((320, 180), (1280, 720)):
        first, *rest = _encoded(width, height, True)
        assert keyframe_width(first) == width
        assert all(keyframe_width(p) is None for p in rest)
    assert all(keyframe_width(p) is None for p in _encoded(320, 180, False))


def test_a_viewer_is_on_the_layer_whose_rate_is_nearest_its_own() -> None:
    rates = {"q": 142.0, "h": 473.0, "f": 1323.0}
    assert simulcast._nearest_layer(1370.0, rates) == "f"  # plus audio and headers
    assert simulcast._nearest_layer(520.0, rates) == "h"
    assert simulcast._nearest_layer(190.0, rates) == "q"


def test_the_report_says_where_the_viewers_were_and_why_a_switch_was_not_measured() -> None:
    plan = simulcast.QUICK
    result = simulcast.SimulcastResult(
        plan=plan,
        single=ServerResult(name="onair", version="v"),
        simulcast=ServerResult(name="onair", version="v"),
        layer_kbps={"q": 142.0, "h": 473.0, "f": 1323.0},
        viewers_on={"q": 0, "h": 0, "f": 20},
        switch_skipped="no lower layer within 15 s of the drop",
    )
    text = simulcast.markdown(result, datetime.datetime(2026, 1, 1), "python -m bench")
    lines = text.splitlines()
    assert lines[0] == simulcast.BEGIN
    assert lines[-1] == simulcast.END
    assert len(lines) == 3  # docs/BENCHMARKS.md stays under 200 lines
    assert "every viewer on layer f" in text
    assert "not measured: no lower layer within 15 s of the drop" in text
    result.viewers_on = {"q": 3, "h": 0, "f": 17}
    result.switch_skipped = None
    result.switch_ms, result.up_ms = [800.0, None], [6000.0, 7000.0]
    text = simulcast.markdown(result, datetime.datetime(2026, 1, 1), "python -m bench")
    assert "viewers spread: 3 on q, 17 on f" in text
    assert "**800 ms** p50 (max 800 ms, 2 drops, 1 missed)" in text
