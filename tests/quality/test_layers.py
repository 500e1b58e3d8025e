"""Issue #20, acceptance 1: a simulcast broadcast from the studio (three encodings: ¼, ½
and full resolution) and three viewers, unconstrained, behind 1 Mbit/s and behind 300
kbit/s. The unconstrained viewer gets the top layer; the others settle within 5 s on a
layer that fits, each then at ≥ 15 fps with under 2 s of freeze per minute; lifting the
limit brings the top layer back within 10 s.

The studio's encodings are set by ``Broadcast.start(simulcast=True)`` (the page's video
transceiver gets ``sendEncodings``), as a browser publisher with simulcast sends them."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest

from tests.daphne import log_errors
from tests.quality.session import Broadcast, Sample, Window

SETTLE_SECONDS = 5
RECOVER_SECONDS = 10
# one sample a second: a change is seen up to a second late
SAMPLING = 1
# what the frame rate and freezes are measured over once settled: "under 2 s of freeze per
# minute" read off 10 s would fail on one keyframe's worth (≈ 0.3 s at 300 kbit/s: a
# simulcast publisher answers any viewer's keyframe request on every layer)
MEASURED_SECONDS = 20


@pytest.fixture(scope="module")
def simulcast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broadcast]:
    with Broadcast.start(tmp_path_factory.mktemp("simulcast"), simulcast=True) as broadcast:
        yield broadcast
    assert log_errors(broadcast.server.log()) == [], broadcast.server.log()[-6000:]


def _height(sample: Sample) -> int:
    return int((sample.video or {}).get("frameHeight", 0))


def _frozen(sample: Sample) -> float:
    return float((sample.video or {}).get("totalFreezesDuration", 0))


def _settled_at(series: list[Sample], fits: Callable[[int], bool]) -> tuple[int, int]:
    """The second from which every height decoded is that of a layer that ``fits`` the
    viewer's link, and the last height. A step from one fitting layer to another later on
    (the 1 Mbit/s viewer, on 360p after the keyframes that any viewer's switch brings on
    every layer cost it packets, back on 720p after a probe) is not a failure to settle; a
    step to a layer that does not fit is."""
    heights = [_height(sample) for sample in series]
    index = len(heights)
    while index > 0 and fits(heights[index - 1]):
        index -= 1
    return index, heights[-1]


@pytest.mark.skipif(
    not os.environ.get("ONAIR_LAYER_ACCEPTANCE"),
    reason="a minute of four Chromiums, timing-bound (a quiet machine): run it with"
    " ONAIR_LAYER_ACCEPTANCE=1 (or python -m tests.quality.measure --simulcast)",
)
def test_viewers_settle_on_layers_that_fit_and_recover_when_lifted(simulcast: Broadcast) -> None:
    broadcast = simulcast
    free = broadcast.add_viewer("free")
    mid = broadcast.add_viewer("mid")
    low = broadcast.add_viewer("low")
    broadcast.wait_for_publisher_kbps(1000, within=30)  # every layer is up
    top = _height(free.sample(broadcast.server.pid))

    mid.link.set_rate(1_000_000)
    low.link.set_rate(300_000)
    series = broadcast.sample(SETTLE_SECONDS + SAMPLING + MEASURED_SECONDS)
    lowest = top // 4  # the studio's layers: ¼, ½ and full resolution
    fits: dict[str, Callable[[int], bool]] = {
        "free": lambda height: height == top,
        "mid": lambda height: top // 2 <= height <= top,  # 360p or 720p in 1 Mbit/s
        "low": lambda height: 0 < height <= lowest,  # only 180p in 300 kbit/s
    }
    settled = {name: _settled_at(taken, fits[name]) for name, taken in series.items()}
    windows = {
        name: Window.over(taken[-(MEASURED_SECONDS + 1) :]) for name, taken in series.items()
    }
    report = {
        name: (settled[name], f"{w.fps:.1f} fps", f"{w.freeze_seconds:.2f} s frozen")
        for name, w in windows.items()
    }
    print(report)
    for name, taken in series.items():  # second by second: the height, the freeze added
        print(
            name,
            [(_height(b), round(_frozen(b) - _frozen(a), 1)) for a, b in itertools.pairwise(taken)],
        )
    assert settled["free"] == (0, top)
    assert settled["mid"][0] <= SETTLE_SECONDS + SAMPLING, report
    assert settled["low"][0] <= SETTLE_SECONDS + SAMPLING, report
    for window in windows.values():
        assert window.fps >= 15, report
        assert window.freeze_seconds / window.seconds * 60 < 2, report

    low.link.set_rate(None)
    recovered = broadcast.sample(RECOVER_SECONDS + SAMPLING, [low])["low"]
    heights = [_height(sample) for sample in recovered]
    print("after the lift:", heights)
    assert top in heights, f"after the lift: {heights}"
    for viewer in (free, mid, low):
        broadcast.remove_viewer(viewer)
