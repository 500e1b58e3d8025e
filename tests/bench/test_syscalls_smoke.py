"""``python -m bench.syscalls`` still runs, and UDP GSO delivers every datagram here."""

import re

import pytest

from tests.bench.modules import run_module

pytestmark = pytest.mark.slow


def test_both_send_paths_deliver_every_datagram() -> None:
    done = run_module("bench.syscalls", "--receivers", "3", "--seconds", "0.5", timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = re.findall(r"per datagram \(3 receivers, (\d+)/(\d+) received\)", done.stdout)
    assert len(counts) == 2, done.stdout + done.stderr  # one sendto per datagram, then GSO
    for received, sent in counts:
        assert int(sent) > 0
        assert received == sent, done.stdout


def test_sendmsg_and_sendmmsg_from_one_socket_deliver_every_datagram() -> None:
    done = run_module(
        "bench.syscalls", "--receivers", "3", "--seconds", "0.3", "--mmsg", "2", timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = re.findall(
        r"per datagram \(3 receivers, (\d+)/(\d+) received, one socket", done.stdout
    )
    assert len(counts) == 4, done.stdout + done.stderr  # sendmsg, sendmmsg, twice
    for received, sent in counts:
        assert int(sent) > 0
        assert received == sent, done.stdout
