"""sfu.recording_files: a recording process killed with SIGKILL leaves a file that
``finalize`` makes playable up to within a few seconds of the kill, without decoding; a
file closed properly is only read; a file with nothing playable is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import av.logging
import pytest

from sfu import RecordingFileError, finalize
from sfu.recorder import FRAGMENT_SECONDS
from tests.sfu.recordings import decode

RECORD_SECONDS = 4.0


@dataclass(frozen=True)
class Killed:
    path: Path
    seconds: float  # how much the process had recorded when it was killed
    copy: Path  # the file as the kill left it


def _kill_while_recording(directory: Path, codec: str) -> Killed:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.sfu.recording_child", str(directory), codec],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline().split()
        assert first[0] == "started", first
        path = Path(first[1])
        seconds = 0.0
        deadline = time.monotonic() + 30
        while seconds < RECORD_SECONDS and time.monotonic() < deadline:
            seconds = float(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    copy = directory / f"as-killed{path.suffix}"
    shutil.copyfile(path, copy)
    return Killed(path, seconds, copy)


@pytest.fixture(scope="module", params=["vp8", "h264"])
def killed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Killed:
    return _kill_while_recording(tmp_path_factory.mktemp("killed"), request.param)


def test_a_killed_recording_is_finalized_playable_to_within_a_fragment(killed: Killed) -> None:
    av.logging.set_level(av.logging.VERBOSE)
    try:
        with av.logging.Capture() as logs:
            info = finalize(killed.path)
    finally:
        av.logging.set_level(None)
    # no decoder opened: FFmpeg's probing was refused each one, and decoded nothing
    said = [message for _, _, message in logs]
    assert any("not on whitelist" in message for message in said)
    assert not any("get_format" in message for message in said)
    assert info.path == killed.path
    assert info.container == killed.path.suffix[1:]
    decoded = decode(killed.path)  # every frame decodes, or this raises
    assert decoded.container_duration > 0
    assert killed.seconds - FRAGMENT_SECONDS - 0.5 <= info.duration <= killed.seconds + 0.5
    assert abs(info.duration - decoded.container_duration) < 0.05
    assert info.video_frames == len(decoded.video) >= 15 * (info.duration - 1)
    assert (info.width, info.height) == (320, 240)
    assert info.video_codec == decoded.video_codec
    assert info.audio_codec == "opus"
    assert info.size == killed.path.stat().st_size
    if info.container == "mp4":
        assert decoded.boxes.index("moov") < decoded.boxes.index("mdat")
        assert "moof" not in decoded.boxes
    # finalized once, it is only read again
    before = killed.path.stat()
    assert finalize(killed.path) == info
    after = killed.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_file_cut_in_the_middle_of_a_cluster_keeps_what_came_before(
    killed: Killed, tmp_path: Path
) -> None:
    cut = tmp_path / f"cut{killed.path.suffix}"
    data = killed.copy.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3 + 7])
    info = finalize(cut)
    decoded = decode(cut)
    assert 0 < info.duration < finalize(killed.path).duration
    assert info.video_frames == len(decoded.video) > 0


def test_a_file_with_nothing_playable_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(RecordingFileError):
        finalize(garbage)
    with pytest.raises(RecordingFileError, match="does not exist"):
        finalize(tmp_path / "missing.mp4")
    with pytest.raises(RecordingFileError, match="not a recording"):
        finalize(tmp_path / "notes.txt")
