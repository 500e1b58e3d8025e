"""Who owns what the C loop (sfu/native) reads: its hand-backs, its targets' descriptors and
SRTP sessions. Real aiortc peers: a publisher's encoded video forwarded to viewers whose
targets the C loop holds.

Memory that was freed can still read as it was, so a use after free passes unnoticed until
the allocator hands it to something else. ``_poisoned_rebuilds`` makes that immediate: the
arrays a ``TargetSet`` lets go of are overwritten with 0xff as it replaces them."""

import errno
import gc
import logging
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pylibsrtp
import pytest

from sfu import Router, native
from sfu.downtrack import DownTrack
from testpeers import TestClients, TestViewer, wait_until
from tests.sfu.forwarding_loop import C_LOOP, needs_c_loop

needs_native = needs_c_loop

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
) -> list[tuple[TestViewer, DownTrack]]:
    """``count`` viewers of a publisher, their video forwarded by the C loop once it is
    built and on (else by the Python loop, once they have a keyframe)."""
    await clients.publish(router)
    viewers = []
    for _ in range(count):
        viewer, session = await clients.subscribe(router, decode=False, record_rtp=True)
        (down_track,) = (c for c in session.down_tracks if c.kind == "video")
        viewers.append((viewer, down_track))
    assert await wait_until(lambda: all(_forwarded(c) for _, c in viewers), within=15)
    return viewers


def _forwarded(down_track: DownTrack) -> bool:
    return down_track.forwarded_natively if C_LOOP else not down_track.waiting_keyframe


def _refuse_next_send(down_track: DownTrack, refused: list[bytes]) -> Any:
    """The C loop's next send to ``down_track`` is refused as a full socket refuses it
    (EAGAIN), its datagrams kept in ``refused``; the ones after go to the socket. Returns
    the hook (to be kept alive)."""
    target = down_track.native_target
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


def _queued(down_track: DownTrack) -> list[bytes]:
    """The RTP datagrams given to the down track's transport from now on."""
    assert down_track.rtp_sender is not None
    transport = down_track.rtp_sender.transport
    queued: list[bytes] = []
    sendto = transport.sendto

    def recording_sendto(data: bytes, addr: Any = None) -> None:
        if is_rtp(data):
            queued.append(bytes(data))
        sendto(data, addr)

    transport.sendto = recording_sendto
    return queued


@needs_native
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
    queued = [_queued(down_track) for _, down_track in viewers]
    hooks = [
        _refuse_next_send(down_track, out)
        for (_, down_track), out in zip(viewers, refused, strict=True)
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


def _c_loop_targets(router: Router) -> list[tuple[Any, Any]]:
    """Every (down track, struct onair_target) the C loop holds, in every forward group."""
    groups = {
        id(track.group): track.group
        for session in router.viewers
        for track in session.down_tracks
        if track.group is not None
    }
    return [
        (track, target)
        for group in groups.values()
        if group.targets is not None
        for track, target in group.targets.items()
    ]


def _sends_on_its_ice_socket(down_track: DownTrack, target: Any) -> bool:
    """The target's descriptor is open, on the socket of the down track's ICE pair."""
    direct = down_track.rtp_sender
    assert direct is not None
    assert direct.datagram_socket is not None
    try:
        return os.fstat(target.fd).st_ino == os.fstat(direct.datagram_socket.fileno()).st_ino
    except OSError:  # closed
        return False


async def test_a_sender_started_again_rebinds_its_down_track_once_and_keeps_the_c_loop_whole(
    router: Router, clients: TestClients
) -> None:
    """aiortc calls a sender's ``send`` on each connect after a description is applied; the
    down_track starts again. It must not be left twice in its group (every packet sent twice),
    nor its old sender's descriptor closed under the C loop (which would then write to
    whatever socket reuses the number)."""
    ((viewer, down_track),) = await _viewers_in_c_loop(router, clients, 1)
    (session,) = router.viewers
    (slot,) = (s for s in session.slots if s.down_track is down_track)
    assert slot.parameters is not None
    await down_track.sender.send(slot.parameters)
    gc.collect()  # the old DirectRtpSender, if nothing holds it
    group = down_track.group
    assert group is not None
    assert group.forwarders.count(down_track) == 1
    held = _c_loop_targets(router)
    assert all(_sends_on_its_ice_socket(c, target) for c, target in held)
    numbers = viewer.video.sequence_numbers
    count = len(numbers)
    assert await wait_until(lambda: len(numbers) >= count + 60, within=10)
    assert len(set(numbers)) == len(numbers)  # nothing twice
    assert (numbers[-1] - numbers[0]) & 0xFFFF == len(numbers) - 1  # nothing missing
    assert await wait_until(lambda: _forwarded(down_track), within=10)


@needs_native
async def test_a_target_keeps_its_descriptor_and_srtp_session_while_the_c_loop_holds_it(
    router: Router, clients: TestClients
) -> None:
    """Whatever the target's ``DirectRtpSender`` does meanwhile (closes, or binds to a new
    SRTP session after a re-key), what the C loop reads through the target (its descriptor,
    its libsrtp session) stays alive until the C loop lets the target go."""
    ((_, down_track),) = await _viewers_in_c_loop(router, clients, 1)
    direct = down_track.rtp_sender
    assert direct is not None
    target = down_track.native_target
    dtls = down_track.sender.transport
    old_session = weakref.ref(dtls._tx_srtp)
    # a re-key: the DTLS transport protects with a new session from now on
    dtls._tx_srtp = pylibsrtp.Session(
        pylibsrtp.Policy(key=bytes(range(30)), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )
    assert direct.bind()
    direct.close()
    gc.collect()
    assert down_track in down_track.group.targets  # type: ignore[union-attr]
    assert _sends_on_its_ice_socket(down_track, target)
    assert old_session() is not None
    assert target.session == native.ffi.cast("void *", old_session()._srtp[0])  # type: ignore[union-attr]
    del target
    # the upkeep sees the change and takes the viewer back (to hand it a new target): the
    # old target, and with it the old session, goes

    def released() -> bool:
        gc.collect()
        return old_session() is None

    assert await wait_until(released, within=10)


async def test_a_router_without_native_forwarding_forwards_every_viewer_from_python(
    new_router: Callable[..., Router], clients: TestClients
) -> None:
    """``RouterOptions.native_forwarding`` off: the C loop, built or not, holds no viewer,
    and every packet still reaches every viewer."""
    router = new_router(native_forwarding=False)
    await clients.publish(router)
    viewers = [
        (await clients.subscribe(router, decode=False, record_rtp=True))[0] for _ in range(2)
    ]
    assert await wait_until(lambda: all(len(v.video.sequence_numbers) >= 60 for v in viewers))
    tracks = [t for session in router.viewers for t in session.down_tracks]
    assert len(tracks) == 4
    assert not any(t.forwarded_natively for t in tracks)
    assert all(t.group is not None and t.group.targets is None for t in tracks)
    for viewer in viewers:
        numbers = viewer.video.sequence_numbers
        assert (numbers[-1] - numbers[0]) & 0xFFFF == len(numbers) - 1  # nothing missing
