"""Who owns what the C loop (sfu/native) reads: its hand-backs, its targets' descriptors and
SRTP sessions. Real aiortc peers: a publisher's encoded video forwarded to viewers whose
targets the C loop holds.

Memory that was freed can still read as it was, so a use after free passes unnoticed until
the allocator hands it to something else. ``_poisoned_rebuilds`` makes that immediate: the
arrays a ``TargetSet`` lets go of are overwritten with 0xff as it replaces them."""

import errno
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sfu import Router, native
from sfu.consumer import Consumer
from sfu.testing import TestClients, TestViewer, wait_until

pytestmark = pytest.mark.skipif(
    not native.available(),
    reason="the C loop is off (ONAIR_NATIVE_FORWARDING=0) or not built (make native)",
)

VIEWERS = 3


def is_rtp(data: bytes) -> bool:
    return 128 <= data[0] < 192 and not 192 <= data[1] <= 223  # not RTCP


@pytest.fixture
def poisoned_rebuilds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every array a ``TargetSet`` replaces is overwritten with 0xff; yields how many
    hand-backs each ``forward`` call returned."""
    rebuild = native.TargetSet._rebuild
    forward = native.TargetSet.forward
    handed: list[int] = []
    poisoned: list[int] = []

    def arrays(target_set: native.TargetSet[Any]) -> list[Any]:
        """The C arrays the set holds (in its attributes, or tuples of them)."""
        found = []
        for name in type(target_set).__slots__:
            value = getattr(target_set, name, None)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, native.ffi.CData) and native.ffi.typeof(item).kind == "array":
                    found.append(item)
        return found

    def poisoning_rebuild(self: native.TargetSet[Any]) -> None:
        before = arrays(self)
        rebuild(self)
        kept = {id(array) for array in arrays(self)}
        for array in before:
            if id(array) not in kept:
                size = native.ffi.sizeof(array)
                native.ffi.memmove(array, b"\xff" * size, size)
                poisoned.append(size)

    def counting_forward(self: native.TargetSet[Any], *args: Any) -> Any:
        result = forward(self, *args)
        handed.append(len(result))
        return result

    monkeypatch.setattr(native.TargetSet, "_rebuild", poisoning_rebuild)
    monkeypatch.setattr(native.TargetSet, "forward", counting_forward)
    yield handed
    assert poisoned, "no array was replaced: the poisoning missed them"


async def _viewers_in_c_loop(
    router: Router, clients: TestClients, count: int
) -> list[tuple[TestViewer, Consumer]]:
    await clients.publish(router)
    viewers = []
    for _ in range(count):
        viewer, session = await clients.subscribe(router, decode=False, record_rtp=True)
        (consumer,) = (c for c in session.consumers if c.kind == "video")
        viewers.append((viewer, consumer))
    assert await wait_until(lambda: all(c._native is not None for _, c in viewers), within=15)
    return viewers


def _refuse_next_send(consumer: Consumer, refused: list[bytes]) -> Any:
    """The C loop's next send to ``consumer`` is refused as a full socket refuses it
    (EAGAIN), its datagrams kept in ``refused``; the ones after go to the socket. Returns
    the hook (to be kept alive)."""
    target = consumer._native
    assert target is not None

    def refuse(hook_data: Any, data: Any, length: int, segment: int) -> int:
        payload = bytes(native.ffi.buffer(data, length))
        step = segment or length
        refused.extend(payload[i : i + step] for i in range(0, length, step))
        target.send_hook = native.ffi.NULL
        return -errno.EAGAIN

    hook = native.ffi.callback("long(void *, void *, int, int)", refuse)
    target.send_hook = hook
    return hook


def _queued(consumer: Consumer) -> list[bytes]:
    """The RTP datagrams given to the consumer's transport from now on."""
    assert consumer._rtp is not None
    transport = consumer._rtp._transport
    queued: list[bytes] = []
    sendto = transport.sendto

    def recording_sendto(data: bytes, addr: Any = None) -> None:
        if is_rtp(data):
            queued.append(bytes(data))
        sendto(data, addr)

    transport.sendto = recording_sendto
    return queued


async def test_viewers_handed_back_in_one_batch_each_queue_exactly_what_they_refused(
    router: Router,
    clients: TestClients,
    poisoned_rebuilds: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Egress congestion: every viewer's socket of a forward group would block in the same
    batch. The first one handed back leaves the C loop, which rebuilds the group's target
    set; the others still get exactly what their socket refused, in order, and keep
    receiving."""
    viewers = await _viewers_in_c_loop(router, clients, VIEWERS)
    poisoned_rebuilds.clear()
    refused: list[list[bytes]] = [[] for _ in viewers]
    queued = [_queued(consumer) for _, consumer in viewers]
    hooks = [
        _refuse_next_send(consumer, out)
        for (_, consumer), out in zip(viewers, refused, strict=True)
    ]
    with caplog.at_level(logging.WARNING):
        assert await wait_until(lambda: all(refused), within=10)
        # all in one batch: one forward call handed every viewer back
        assert VIEWERS in poisoned_rebuilds
        received = [len(viewer.video.sequence_numbers) for viewer, _ in viewers]
        assert await wait_until(
            lambda: all(
                len(viewer.video.sequence_numbers) >= count + 30
                for (viewer, _), count in zip(viewers, received, strict=True)
            ),
            within=10,
        )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for out, datagrams in zip(refused, queued, strict=True):
        assert datagrams[: len(out)] == out
    for viewer, _ in viewers:
        numbers = viewer.video.sequence_numbers
        assert len(set(numbers)) == len(numbers)  # nothing twice
        assert (numbers[-1] - numbers[0]) & 0xFFFF == len(numbers) - 1  # nothing missing
    del hooks
