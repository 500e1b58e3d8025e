"""``python -m bench --recording`` still runs (both codecs, one short recording each, two
viewers), and its arithmetic: each recording against the windows without on either side."""

import datetime
import json
from pathlib import Path

import pytest

from bench import recording
from tests.bench.modules import run_module


def _window(viewers: int, on: bool, cpu: float) -> recording.Window:
    return recording.Window(viewers, on, 3.0, cpu, 210.0, 210.0)


def _file(decoded: int, error: str | None = None) -> recording.RecordedFile:
    return recording.RecordedFile("webm", 10.0, 2_000_000, 301, 300, decoded, error)


def test_a_recording_costs_its_window_less_the_mean_of_the_windows_around_it() -> None:
    result = recording.CodecResult(codec="vp8", source="s")
    result.windows = [
        _window(0, False, 0.02),
        _window(10, False, 0.04),
        _window(10, True, 0.07),  # 0.07 - (0.04 + 0.06) / 2 = 0.02
        _window(10, False, 0.06),
        _window(10, True, 0.10),  # 0.10 - (0.06 + 0.06) / 2 = 0.04
        _window(10, False, 0.06),
    ]
    result.files = [_file(301), _file(301)]
    s = result.summary()
    assert s["recordings"] == 2
    assert s["recording_cpu"] == pytest.approx(0.03)
    assert (s["recording_cpu_min"], s["recording_cpu_max"]) == pytest.approx((0.02, 0.04))
    assert s["viewer_cpu"] == pytest.approx((0.06 - 0.02) / 10)
    assert s["recording_in_viewers"] == pytest.approx(7.5)
    assert s["bytes_per_second"] == pytest.approx(200_000)
    assert (s["decoded_frames"], s["sent_frames"], s["files_failing"]) == (602, 600, 0)


def test_the_report_is_one_paragraph_and_says_when_a_file_does_not_play() -> None:
    vp8 = recording.CodecResult(codec="vp8", source="s")
    vp8.windows = [_window(0, False, 0.02), _window(10, False, 0.04)]
    vp8.windows += [_window(10, True, 0.05), _window(10, False, 0.04)]
    vp8.files = [_file(301)]
    h264 = recording.CodecResult(codec="h264", source="s", windows=list(vp8.windows))
    h264.files = [_file(0, "InvalidDataError: no frame")]
    result = recording.RecordingResult(plan=recording.QUICK, codecs=[vp8, h264])
    text = recording.markdown(result, datetime.datetime(2026, 1, 1), "python -m bench")
    lines = text.splitlines()
    assert len(lines) == 2  # docs/BENCHMARKS.md stays under 200 lines
    assert lines[0] == recording.BEGIN
    assert lines[1].startswith("**Recording**")
    assert lines[1].endswith(recording.END)
    assert "VP8 + Opus → WebM: **1.00% of a core**" in text
    assert "**200 KB written/s**, 301 video frames decoded of 300 sent" in text
    assert "H.264 + Opus → MP4" in text
    assert "1 of 1 files did not decode" in text


@pytest.mark.slow
def test_quick_recording_step_measures_and_plays_both_codecs(tmp_path: Path) -> None:
    results = tmp_path / "recording.json"
    done = run_module(
        "bench",
        "--recording",
        "--quick",
        "--viewers",
        "2",
        "--window",
        "1",
        "--repetitions",
        "1",
        "--no-report",
        "--json",
        str(results),
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(results.read_text())
    assert [c["codec"] for c in document["codecs"]] == ["vp8", "h264"]
    for codec in document["codecs"]:
        assert codec["error"] is None, codec
        assert [(w["viewers"], w["recording"]) for w in codec["windows"]] == [
            (0, False),
            (2, False),
            (2, True),
            (2, False),
        ]
        for window in codec["windows"][1:]:  # both viewers got the stream all along
            assert window["viewer_pps_median"] > 0.9 * window["source_pps"], window
        (file,) = codec["files"]
        assert file["container"] == {"vp8": "webm", "h264": "mp4"}[codec["codec"]]
        assert file["decode_error"] is None, file
        # every frame written decodes; the file opens on a keyframe the publisher had sent
        # just before the frames were counted, and a frame or two may pass while the bench's
        # requests go round
        assert file["decoded_frames"] == file["muxed_frames"]
        sent = file["sent_frames"]
        assert sent - sent // 30 <= file["decoded_frames"] <= sent + 5, file
        assert file["size"] > 100_000, file
        assert file["duration"] > 2.0, file
        summary = document["summary"][codec["codec"]]
        assert summary["recording_cpu"] is not None
        assert summary["bytes_per_second"] > 50_000
