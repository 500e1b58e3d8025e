"""The C forwarding loop (sfu/native) on its own: a viewer's target whose sends a test
hook takes (or refuses, as the kernel would), with real SRTP sessions."""

import errno
import random
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtp import RtpPacket

from sfu import native, rtp_sender
from sfu.munger import RtpMunger
from sfu.native import source

pytestmark = pytest.mark.skipif(not native.available(), reason="not built (make native)")

KEY = bytes(range(44))  # AEAD-AES-256-GCM: 32 bytes of key, 12 of salt
SSRC = 0x5EED
UNPROTECTED_HEADER = 12  # with AES-GCM the header is authenticated, not encrypted


def _session(direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=KEY,
            ssrc_type=direction,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
        )
    )


@dataclass
class _Viewer:
    """A ``struct onair_target`` whose sends the hook records: (GSO segment size or 0,
    the datagrams), or refuses with ``refuse`` (an errno) once ``room`` datagrams were
    taken, or GSO sends with ``refuse_gso``."""

    target: Any
    sends: list[tuple[int, list[bytes]]] = field(default_factory=list)
    room: int | None = None
    refuse: int = errno.EAGAIN
    refuse_gso: int = 0
    keep: list[Any] = field(default_factory=list)

    @property
    def datagrams(self) -> list[bytes]:
        return [d for _, datagrams in self.sends for d in datagrams]

    def headers(self) -> list[tuple[int, int, int]]:
        """(sequence number, timestamp, SSRC) of each datagram sent."""
        return [struct.unpack("!HII", d[2:UNPROTECTED_HEADER]) for d in self.datagrams]


def _viewer(munger: RtpMunger, **behaviour: Any) -> _Viewer:
    """A target mapping by ``munger``'s state (a ``struct onair_mapping``)."""
    assert munger.native
    ffi = native.ffi
    target = ffi.new("struct onair_target *")
    viewer = _Viewer(target, **behaviour)
    session = _session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)

    def send(hook_data: Any, data: Any, length: int, segment: int) -> int:
        if segment and viewer.refuse_gso:
            return -viewer.refuse_gso
        payload = bytes(ffi.buffer(data, length))
        datagrams = (
            [payload[i : i + segment] for i in range(0, length, segment)] if segment else [payload]
        )
        if viewer.room is not None:
            if len(datagrams) > viewer.room:
                viewer.room = 0
                return -viewer.refuse
            viewer.room -= len(datagrams)
        viewer.sends.append((segment, datagrams))
        return length

    hook = ffi.callback("long(void *, void *, int, int)", send)
    viewer.keep += [session, hook]
    target.fd = -1  # never used: the hook sends
    target.gso = 1
    target.ssrc = SSRC
    rtp_sender.protect_with(target, session)
    target.send_hook = hook
    target.mapping = munger.mapping
    viewer.keep.append(munger)
    return viewer


def _packets(numbers: list[int], payload_sizes: list[int] | None = None) -> list[RtpPacket]:
    sizes = payload_sizes or [1000] * len(numbers)
    return [
        RtpPacket(
            payload_type=96,
            sequence_number=n & 0xFFFF,
            timestamp=(n * 3000) & 0xFFFFFFFF,
            payload=bytes([n % 251]) * size,
        )
        for n, size in zip(numbers, sizes, strict=True)
    ]


def _forward(targets: native.TargetSet[str], packets: list[RtpPacket]) -> list[native.Handoff[str]]:
    templates = [p.serialize() for p in packets]
    return targets.forward(native.PackedBatch(templates, packets), 0.0, 1 << 32)


def _based(first: RtpPacket, *, native: bool = True) -> RtpMunger:
    munger = RtpMunger(90000, native=native)
    munger.mapping.last_out_seq, munger.mapping.last_out_ts = 4321, 0x87654321
    assert munger.map(first.sequence_number, first.timestamp, now=0.0) is not None
    return munger


def _batches(numbers: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(numbers), size):
        yield numbers[start : start + size]


def test_the_c_loop_maps_sequence_numbers_and_timestamps_as_the_munger_does() -> None:
    """Hours of a stream (the 16-bit sequence number wraps three times), with reordered
    packets and packets older than the stream's window, which are left out."""
    numbers = list(range(1000, 1000 + 3 * 65536))
    numbers[5000:5003] = [numbers[5002], numbers[5000], numbers[5001]]  # reordered
    numbers.insert(100_000, numbers[100_000] - 20_000)  # ancient: outside the window
    numbers.insert(150_000, numbers.pop(149_900))  # 100 late, but inside it: forwarded
    python = _based(_packets([numbers[0]])[0], native=False)
    c = _based(_packets([numbers[0]])[0])
    viewer = _viewer(c)
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    expected = []
    for batch in _batches(numbers, 40):
        packets = _packets(batch, [100] * len(batch))
        expected += [
            (mapped[0], mapped[1], SSRC)
            for p in packets
            if (mapped := python.map(p.sequence_number, p.timestamp, now=0.0)) is not None
        ]
        assert _forward(targets, packets) == []
    assert len(expected) == len(numbers) - 1  # the ancient one
    assert viewer.headers() == expected
    # the C loop mapped in the munger's own state: Python carries on from there
    assert c.incoming_sequence_number(expected[-1][0]) == numbers[-1] & 0xFFFF
    assert c.map(numbers[-1] & 0xFFFF, 0, now=0.0) == python.map(numbers[-1] & 0xFFFF, 0, 0.0)


@pytest.mark.parametrize("seed", range(20))
def test_the_c_loop_cuts_datagrams_into_gso_sends_as_the_python_loop_does(seed: int) -> None:
    """``forward.c``'s ``transmit`` and ``rtp_sender.gso_run`` split the same datagram sizes
    into the same sends: random frames of runs of same-size packets, a shorter one here and
    there, more than the kernel's 64 segments at times (all within one scratch buffer)."""
    chooser = random.Random(seed)
    sizes: list[int] = []
    while len(sizes) < 100:
        size = chooser.choice([200, 300, 400, 410])
        sizes += [size] * chooser.choice([1, 2, 5, 30, 70])
        if chooser.random() < 0.5:
            sizes.append(chooser.randrange(100, size + 50))
    sizes = sizes[:100]
    packets = _packets(list(range(len(sizes))), sizes)
    viewer = _viewer(_based(packets[0]))
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    assert _forward(targets, packets) == []
    sent = [len(d) for d in viewer.datagrams]
    assert len(sent) == len(packets)
    assert sum(sent) <= source.SCRATCH_BYTES
    python: list[tuple[int, int]] = []
    # the C loop sends what it has protected every 64 datagrams (its array of sizes)
    for start in range(0, len(sent), source.MAX_SEGMENTS):
        chunk = sent[start : start + source.MAX_SEGMENTS]
        index = 0
        while index < len(chunk):
            run = rtp_sender.gso_run(chunk, index, source.MAX_SEGMENTS)
            python.append((chunk[index] if run - index > 1 else 0, run - index))
            index = run
    assert [(segment, len(datagrams)) for segment, datagrams in viewer.sends] == python


def test_each_run_of_same_size_datagrams_leaves_in_one_gso_send_and_decrypts() -> None:
    packets = _packets(list(range(10, 21)), [1000] * 5 + [300] + [1000] * 3 + [500] + [90])
    viewer = _viewer(_based(packets[0]))
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    assert _forward(targets, packets) == []
    segments = [segment for segment, _ in viewer.sends]
    counts = [len(datagrams) for _, datagrams in viewer.sends]
    assert counts == [6, 4, 1]
    assert segments[:2] == [len(viewer.datagrams[0])] * 2
    assert segments[2] == 0  # a lone datagram: no GSO
    receiving = _session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    decrypted = [RtpPacket.parse(receiving.unprotect(d)) for d in viewer.datagrams]
    assert [p.payload for p in decrypted] == [p.payload for p in packets]
    assert viewer.target.packets_sent == len(packets)
    assert viewer.target.payload_bytes == sum(len(p.payload) for p in packets)
    assert viewer.target.protected_bytes == sum(map(len, viewer.datagrams))


def test_more_than_the_scratch_buffer_leaves_as_it_fills() -> None:
    packets = _packets(list(range(60)), [1200] * 60)  # 73 KB
    viewer = _viewer(_based(packets[0]))
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    _forward(targets, packets)
    assert [len(d) for _, d in viewer.sends] == [48, 12]  # 60,000 bytes hold 48 of them
    assert [h[0] for h in viewer.headers()] == [
        (viewer.headers()[0][0] + i) & 0xFFFF for i in range(60)
    ]


def test_where_gso_is_refused_the_datagrams_go_one_at_a_time_from_then_on() -> None:
    packets = _packets(list(range(8)), [1000] * 4 + [200] + [1000] * 2 + [100])
    viewer = _viewer(_based(packets[0]), refuse_gso=errno.EIO)
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    _forward(targets, packets[:5])
    _forward(targets, packets[5:])
    assert [segment for segment, _ in viewer.sends] == [0] * len(packets)
    assert viewer.target.gso == 0
    assert len(viewer.datagrams) == len(packets)


@pytest.mark.parametrize("room", [0, 3, 6])
def test_what_a_socket_refuses_is_spilled_and_the_viewer_handed_back(room: int) -> None:
    """Two viewers; the first one's socket takes ``room`` datagrams, then would block: what
    it did not take comes back (in order, protected), the second viewer gets everything."""
    packets = _packets(list(range(12)), [1000] * 5 + [400] + [1000] * 5 + [300])
    blocked = _viewer(_based(packets[0]), room=room)
    fine = _viewer(_based(packets[0]))
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("blocked", blocked.target)
    targets.add("fine", fine.target)
    handed = _forward(targets, packets)
    assert [handoff.owner for handoff in handed] == ["blocked"]
    handoff = handed[0]
    taken = {0: 0, 3: 0, 6: 6}[room]  # GSO sends are taken or refused whole
    spilled = handoff.datagrams
    assert len(blocked.datagrams) == taken
    assert len(spilled) == len(packets) - taken
    assert handoff.resume == len(packets)  # the whole batch was protected before sending
    assert [len(d) for d in blocked.datagrams + spilled] == [len(d) for d in fine.datagrams]
    receiving = _session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    decrypted = [RtpPacket.parse(receiving.unprotect(d)) for d in blocked.datagrams + spilled]
    assert [p.payload for p in decrypted] == [p.payload for p in packets]
    assert len(fine.datagrams) == len(packets)
    # until Python clears it, the blocked viewer is left out
    assert blocked.target.blocked == 1
    _forward(targets, _packets([12]))
    assert len(blocked.datagrams) == taken
    assert len(fine.datagrams) == len(packets) + 1


def test_a_socket_error_other_than_blocking_loses_that_send_only() -> None:
    """The socket is gone (the viewer left): nothing to queue, nothing handed back."""
    packets = _packets([1, 2])
    viewer = _viewer(_based(packets[0]), room=0, refuse=errno.EBADF)
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    assert _forward(targets, packets[:1]) == []
    assert viewer.target.blocked == 0
    viewer.room = None
    assert _forward(targets, packets[1:]) == []
    assert len(viewer.datagrams) == 1


def test_an_oversize_or_truncated_template_is_left_out() -> None:
    packets = _packets([1, 2, 3], [1000, 1000, 1000])
    templates = [packets[0].serialize(), b"\x80" * 8, packets[2].serialize()]
    viewer = _viewer(_based(packets[0]))
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    assert targets.forward(native.PackedBatch(templates, packets), 0.0, 1 << 32) == []
    assert len(viewer.datagrams) == 2
    assert viewer.target.packets_sent == 2


def test_a_module_built_from_another_forward_c_is_not_loaded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``git pull`` without ``make native``: the Python loop forwards until it is rebuilt."""
    assert native.ffi.string(native.lib.onair_source()).decode() == source.source_digest()
    assert native._load()[1] is native.lib
    monkeypatch.setattr(source, "source_digest", lambda: "another forward.c")
    with caplog.at_level("WARNING", logger="sfu.native"):
        assert native._load() == (None, None)
    assert "run make native" in caplog.text


@pytest.mark.parametrize(
    ("offset", "length"),
    [(2**31 - 8, 16), (source.SPILL_BYTES, 1), (source.SPILL_BYTES - 8, 16), (-1, 4), (0, -1)],
)
def test_a_spill_range_outside_the_spill_buffer_copies_nothing(offset: int, length: int) -> None:
    """``offset + length`` overflows a signed int for the first: the bound must not be
    checked that way. In a subprocess, as a bad read may crash the process."""
    script = (
        "from sfu.native import ffi, lib\n"
        "out = ffi.new('unsigned char[]', b'\\xab' * 16)\n"
        f"lib.onair_spilled({offset}, {length}, out)\n"
        "print(ffi.buffer(out, 16)[:].hex())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ab" * 16


def test_a_protected_length_beyond_the_trailer_room_is_left_out() -> None:
    """What the protect function reports is checked before the loop sends or moves past it:
    the packet grows by at most libsrtp's trailer, and never shrinks."""
    packets = _packets([1, 2, 3], [1000] * 3)
    viewer = _viewer(_based(packets[0]))
    growth = iter([16, source.TRAILER_BYTES + 1, -1])

    def protect(session: Any, packet: Any, length: Any) -> int:
        length[0] += next(growth)
        return 0

    callback = native.ffi.callback("int(void *, void *, int *)", protect)
    viewer.target.protect = callback
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    assert _forward(targets, packets) == []
    assert [len(d) for d in viewer.datagrams] == [len(packets[0].serialize()) + 16]
    assert viewer.target.packets_sent == 1


def test_a_target_whose_address_length_exceeds_its_address_sends_nothing() -> None:
    """The kernel would read the address past the struct's field (what follows it)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiving,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sending,
    ):
        receiving.bind(("127.0.0.1", 0))
        receiving.setblocking(False)
        packets = _packets([1, 2], [100, 100])
        viewer = _viewer(_based(packets[0]))
        address = rtp_sender._sockaddr(socket.AF_INET, receiving.getsockname())
        assert address is not None
        viewer.target.send_hook = native.ffi.NULL
        viewer.target.fd = sending.fileno()
        viewer.target.address = address
        targets: native.TargetSet[str] = native.TargetSet()
        targets.add("viewer", viewer.target)
        viewer.target.address_length = len(address)
        _forward(targets, packets[:1])
        assert len(receiving.recv(2048)) > len(packets[0].payload)  # this one is sent
        viewer.target.address_length = native.ffi.sizeof(viewer.target.address) + 1
        _forward(targets, packets[1:])
        with pytest.raises(BlockingIOError):
            receiving.recv(2048)


def test_what_overflows_the_spill_buffer_is_dropped_and_counted() -> None:
    """Every viewer's socket refuses a full batch: the spill buffer (shared by one call's
    viewers) takes as many whole batches as fit; the next viewers' are dropped, as a full
    socket buffer would drop them, and counted."""
    packets = _packets(list(range(48)), [1200] * 48)
    viewers = [_viewer(_based(packets[0]), room=0) for _ in range(18)]
    targets: native.TargetSet[int] = native.TargetSet()
    for number, viewer in enumerate(viewers):
        targets.add(number, viewer.target)
    handed = targets.forward(
        native.PackedBatch([p.serialize() for p in packets], packets), 0.0, 1 << 32
    )
    assert [handoff.owner for handoff in handed] == list(range(len(viewers)))
    size = len(packets[0].serialize()) + 16  # AES-GCM's tag
    fits = source.SPILL_BYTES // (len(packets) * size)
    assert fits == 17
    for handoff in handed[:fits]:
        assert handoff.resume == len(packets)
        receiving = _session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
        decrypted = [RtpPacket.parse(receiving.unprotect(d)) for d in handoff.datagrams]
        assert [p.payload for p in decrypted] == [p.payload for p in packets]
        assert viewers[handoff.owner].target.spill_dropped == 0
    for handoff in handed[fits:]:
        assert handoff.datagrams == []
        assert viewers[handoff.owner].target.spill_dropped == len(packets)


def test_the_c_loop_maps_vp8_picture_ids_and_tl0picidx_as_the_munger_does() -> None:
    """After a switch to a layer whose numbers are elsewhere (Python re-bases), the C loop
    goes on mapping picture IDs and TL0PICIDX in the munger's state, round their wrap, as
    ``RtpMunger.map_vp8`` does."""

    def vp8_packets(numbers: list[int]) -> list[RtpPacket]:
        return [
            RtpPacket(
                payload_type=96,
                sequence_number=n & 0xFFFF,
                timestamp=(n * 3000) & 0xFFFFFFFF,
                payload=bytes(
                    [0x90, 0xE0, 0x80 | (n >> 8) & 0x7F, n & 0xFF, (n // 3) & 0xFF, 0x40, n % 251]
                ),
            )
            for n in numbers
        ]

    def munged(first: list[RtpPacket], *, native: bool) -> RtpMunger:
        munger = RtpMunger(90000, native=native, vp8=True)
        for p in first:
            assert munger.map(p.sequence_number, p.timestamp, now=0.0) is not None
            munger.map_vp8(p.payload, 0)
        munger.switch_source()
        return munger

    before = vp8_packets([31000, 31001])
    numbers = list(range(5000, 5000 + 40_000))  # picture IDs wrap at 32768, TL0 at 256
    numbers[300:302] = [numbers[301], numbers[300]]  # reordered
    packets = vp8_packets(numbers)
    python = munged(before, native=False)
    c = munged(before, native=True)
    for munger in (python, c):  # the re-base is Python's
        assert munger.map(packets[0].sequence_number, packets[0].timestamp, now=0.0)
    expected = [python.map_vp8(packets[0].payload, 0)]
    c_first = c.map_vp8(packets[0].payload, 0)
    assert c_first == expected[0]
    viewer = _viewer(c)
    targets: native.TargetSet[str] = native.TargetSet()
    targets.add("viewer", viewer.target)
    for batch in _batches(list(range(1, len(packets))), 40):
        chunk = [packets[i] for i in batch]
        for p in chunk:
            assert python.map(p.sequence_number, p.timestamp, now=0.0) is not None
            expected.append(python.map_vp8(p.payload, 0))
        assert _forward(targets, chunk) == []
    receiving = _session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    sent = [RtpPacket.parse(receiving.unprotect(d)).payload for d in viewer.datagrams]
    assert [c_first, *sent] == expected
    assert (c.mapping.last_out_picture_id, c.mapping.last_out_tl0) == (
        python.mapping.last_out_picture_id,
        python.mapping.last_out_tl0,
    )
