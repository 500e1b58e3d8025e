"""``python -m bench.hotpath`` still runs, for both forwarding loops, and every packet it
hands the producer reaches every viewer (it checks that itself, and fails otherwise)."""

import re

import pytest

from sfu import native
from tests.bench.modules import run_module

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "loop",
    [
        "python",
        pytest.param(
            "c",
            marks=pytest.mark.skipif(
                not native.available(), reason="the C loop is off or not built"
            ),
        ),
    ],
)
def test_the_hot_path_forwards_every_packet_to_every_viewer(loop: str) -> None:
    done = run_module(
        "bench.hotpath",
        "--viewers",
        "3",
        "--packets",
        "200",
        "--repeat",
        "1",
        "--loop",
        loop,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # no warnings, no exceptions ignored in __del__
    assert re.fullmatch(
        rf"\s*{loop} loop: \d+\.\d\d µs per packet per viewer \(3 viewers, best of 1\)\n",
        done.stdout,
    ), done.stdout
