import asyncio
import itertools
import struct

import pytest

from sfu import keyframe as keyframe_module
from sfu.keyframe import KeyframeRequester, is_h264_keyframe_start, is_vp8_keyframe_start


def test_vp8_keyframe_start_needs_s_pid0_and_a_clear_p_bit() -> None:
    key, inter = b"\x50\x1f\x00\x9d\x01\x2a", b"\x51\x1f\x00"  # frame tags, P=0 / P=1
    assert is_vp8_keyframe_start(b"\x10" + key)  # S=1, PID=0
    assert not is_vp8_keyframe_start(b"\x10" + inter)
    assert not is_vp8_keyframe_start(b"\x00" + key)  # not a partition start
    assert not is_vp8_keyframe_start(b"\x11" + key)  # PID=1
    # X=1, I=1 with a 15-bit picture id (as aiortc and browsers send)
    assert is_vp8_keyframe_start(b"\x90\x80\x81\x23" + key)
    assert not is_vp8_keyframe_start(b"\x90\x80\x81\x23" + inter)
    # X=1, I=1 with a 7-bit picture id, L and T/K octets
    assert is_vp8_keyframe_start(b"\x90\xf0\x05\x00\x00" + key)
    assert not is_vp8_keyframe_start(b"\x90")


def _stap_a(*nalus: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nalus)


def test_h264_keyframe_start_in_single_nal_stap_a_and_fu_a() -> None:
    sps, pps, idr, non_idr = b"\x67\x42\xe0\x1f", b"\x68\xce\x3c\x80", b"\x65\x88\x84", b"\x41\x9a"
    assert is_h264_keyframe_start(sps)
    assert is_h264_keyframe_start(idr)
    assert not is_h264_keyframe_start(pps)
    assert not is_h264_keyframe_start(non_idr)
    assert is_h264_keyframe_start(_stap_a(sps, pps))
    assert is_h264_keyframe_start(_stap_a(pps, idr))
    assert not is_h264_keyframe_start(_stap_a(pps, non_idr))
    assert is_h264_keyframe_start(b"\x7c\x85\x88")  # FU-A, start of an IDR slice
    assert not is_h264_keyframe_start(b"\x7c\x05\x88")  # FU-A, middle of an IDR slice
    assert not is_h264_keyframe_start(b"\x7c\x81\x9a")  # FU-A, start of a non-IDR slice
    assert not is_h264_keyframe_start(b"")


async def test_requests_are_coalesced_to_one_per_interval() -> None:
    sent: list[float] = []

    async def send() -> bool:
        sent.append(asyncio.get_running_loop().time())
        return True

    requester = KeyframeRequester(send, min_interval=0.2)
    for _ in range(50):
        await requester.request()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.25)
    requester.close()
    assert requester.requests == 50
    assert 3 <= len(sent) <= 4  # at 0, 0.2, 0.4 (and the deferred one at 0.6)
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(sent))


async def test_a_keyframe_cancels_the_deferred_request() -> None:
    sent: list[int] = []

    async def send() -> bool:
        sent.append(1)
        return True

    requester = KeyframeRequester(send, min_interval=0.2)
    await requester.request()
    await requester.request()  # deferred
    requester.keyframe_received()
    await asyncio.sleep(0.3)
    assert sent == [1]
    assert requester.sent == 1


async def test_a_request_during_a_slow_send_is_deferred_not_doubled() -> None:
    sent: list[float] = []

    async def slow_send() -> bool:
        sent.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)
        return True

    requester = KeyframeRequester(slow_send, min_interval=0.2)
    first = asyncio.ensure_future(requester.request())
    await asyncio.sleep(0.01)
    await requester.request()  # while the first is still being sent
    await first
    await asyncio.sleep(0.3)
    requester.close()
    assert len(sent) == 2
    assert sent[1] - sent[0] >= 0.19


async def test_a_join_waits_for_the_join_window_not_the_interval() -> None:
    sent: list[float] = []

    async def send() -> bool:
        sent.append(asyncio.get_running_loop().time())
        return True

    requester = KeyframeRequester(send, min_interval=1.0, join_window=0.1)
    await requester.request()  # a viewer's PLI
    await requester.request()  # deferred by the interval...
    for _ in range(5):  # ...until viewers join: they move it to the join window
        await requester.request(join=True)
    await asyncio.sleep(0.2)
    assert len(sent) == 2
    assert 0.09 <= sent[1] - sent[0] < 0.5
    for _ in range(5):  # a crowd joining within 50 ms: one request now, one deferred
        await requester.request(join=True)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    requester.close()
    assert len(sent) == 4
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(sent))
    assert requester.requests == 12


async def test_an_unanswered_request_is_made_again_while_someone_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A browser ignores a request within 300 ms of its previous one: a viewer who joined
    then must not wait for a keyframe forever."""
    monkeypatch.setattr(keyframe_module, "KEYFRAME_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(keyframe_module, "KEYFRAME_RETRY_MAX_SECONDS", 0.1)
    sent: list[float] = []
    waiting = [True]

    async def send() -> bool:
        sent.append(asyncio.get_running_loop().time())
        return True

    requester = KeyframeRequester(send, min_interval=1.0, waiting=lambda: waiting[0])
    await requester.request(join=True)
    await asyncio.sleep(0.4)  # no keyframe comes: again after 0.05, 0.1, 0.1, ... s
    assert len(sent) >= 4
    assert 0.04 <= sent[1] - sent[0] < 0.3
    assert all(b - a >= 0.09 for a, b in itertools.pairwise(sent[1:]))
    requester.keyframe_received()  # answered: no more
    count = len(sent)
    await asyncio.sleep(0.3)
    assert len(sent) == count
    assert requester.retries == count - 1

    waiting[0] = False  # a request nobody waits on (a viewer's PLI) is not repeated
    await asyncio.sleep(1.0)
    await requester.request()
    await asyncio.sleep(0.3)
    requester.close()
    assert len(sent) == count + 1


async def test_a_request_that_could_not_be_sent_is_tried_again_while_someone_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A viewer who joins before the publisher's first packet: there is nobody to ask yet."""
    monkeypatch.setattr(keyframe_module, "KEYFRAME_RETRY_SECONDS", 0.05)
    ready = [False]
    sent: list[float] = []

    async def send() -> bool:
        if ready[0]:
            sent.append(asyncio.get_running_loop().time())
        return ready[0]

    requester = KeyframeRequester(send, min_interval=1.0, waiting=lambda: True)
    await requester.request(join=True)
    assert sent == []
    ready[0] = True  # the publisher's first packet arrives
    await asyncio.sleep(0.3)
    requester.keyframe_received()
    requester.close()
    assert len(sent) >= 1
    assert requester.sent == len(sent)
