"""``python -m bench.syscalls`` still runs, and UDP GSO delivers every datagram here."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_both_send_paths_deliver_every_datagram() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.syscalls", "--receivers", "3", "--seconds", "0.5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counts = re.findall(r"per datagram \(3 receivers, (\d+)/(\d+) received\)", done.stdout)
    assert len(counts) == 2, done.stdout + done.stderr  # one sendto per datagram, then GSO
    for received, sent in counts:
        assert int(sent) > 0
        assert received == sent, done.stdout
