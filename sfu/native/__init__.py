"""The C forwarding loop (``forward.c``), when ``python -m sfu.native.build`` built it.

``lib`` is None when the module was not built (no C compiler or Python headers on the
machine) or was built from another ``forward.c``: every viewer is then forwarded by the
Python loop (``sfu.downtrack.DownTrack.forward`` and ``sfu.rtp_sender.DirectRtpSender``),
which sends the same packets at more CPU per viewer. A router also forwards with the Python
loop when its ``RouterOptions.native_forwarding`` is off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from aiortc.rtp import RtpPacket

logger = logging.getLogger(__name__)


def _load() -> tuple[Any, Any]:
    """(ffi, lib) of the built module, or (None, None): not built, or built from another
    ``forward.c`` than this tree's (``git pull`` without ``make native``)."""
    try:
        from sfu.native import _forward  # type: ignore[attr-defined]
    except ImportError:
        return None, None
    from sfu.native.source import source_digest

    source = getattr(_forward.lib, "onair_source", None)  # older builds lack it
    built = _forward.ffi.string(source()).decode() if source is not None else None
    if built != source_digest():
        logger.warning("sfu.native was built from another forward.c: run make native")
        return None, None
    return _forward.ffi, _forward.lib


ffi, lib = _load()

Owner = TypeVar("Owner")


def available() -> bool:
    """Whether the C loop is built (and from this tree's ``forward.c``)."""
    return lib is not None


def new_mapping() -> Any:
    """A zeroed ``struct onair_mapping``: an ``RtpMunger``'s state where the C loop may
    forward by it (freed with the last reference to it)."""
    return ffi.new("struct onair_mapping *")


class PackedBatch:
    """A producer's batch as the C loop reads it: one group's serialized packets back to
    back, with each packet's length, payload length, sequence number and timestamp."""

    __slots__ = ("_keep", "struct")

    def __init__(self, templates: Sequence[bytes], packets: Sequence[RtpPacket]) -> None:
        data = b"".join(templates)
        offsets = []
        offset = 0
        for template in templates:
            offsets.append(offset)
            offset += len(template)
        arrays = (
            ffi.from_buffer(data),
            ffi.new("int[]", offsets),
            ffi.new("int[]", [len(t) for t in templates]),
            ffi.new("int[]", [len(p.payload) for p in packets]),
            ffi.new("uint32_t[]", [p.sequence_number for p in packets]),
            ffi.new("uint32_t[]", [p.timestamp for p in packets]),
        )
        struct = ffi.new("struct onair_batch *")
        struct.count = len(templates)
        (
            struct.data,
            struct.offsets,
            struct.lengths,
            struct.payload_lengths,
            struct.sequence_numbers,
            struct.timestamps,
        ) = arrays
        self._keep = (data, arrays)  # what the struct points into
        self.struct = struct


class Handoff(NamedTuple, Generic[Owner]):
    """A viewer the C loop handed back (its socket would block): what the socket did not
    take, in order, and the index in the batch from which Python forwards it."""

    owner: Owner
    resume: int
    datagrams: list[bytes]


class TargetSet(Generic[Owner]):
    """The viewers of a forward group that the C loop forwards: each an owner (its
    ``DownTrack``) and its ``struct onair_target``.

    What one ``forward`` hands C (the owners, the targets, the array of their pointers, the
    array C fills with hand-backs) is replaced whole when a viewer is added or discarded,
    and ``forward`` holds it until C returns; what C handed back is copied into Python
    objects before ``forward`` returns, as each owner's callback may change the set."""

    __slots__ = ("_call", "_members")

    def __init__(self) -> None:
        self._members: dict[Owner, Any] = {}
        # owners, targets, struct onair_target *[], struct onair_handoff[]
        self._call: tuple[tuple[Owner, ...], tuple[Any, ...], Any, Any] = ((), (), None, None)

    def __contains__(self, owner: object) -> bool:
        return owner in self._members

    def __len__(self) -> int:
        return len(self._call[0])

    @property
    def owners(self) -> tuple[Owner, ...]:
        return self._call[0]

    def items(self) -> tuple[tuple[Owner, Any], ...]:
        """Each owner with its target."""
        return tuple(self._members.items())

    def add(self, owner: Owner, target: Any) -> None:
        self._members[owner] = target
        self._rebuild()

    def discard(self, owner: Owner) -> None:
        if self._members.pop(owner, None) is not None:
            self._rebuild()

    def forward(self, batch: PackedBatch, now: float, ntp_time: int) -> list[Handoff[Owner]]:
        """Forward ``batch`` to every target; the owners handed back."""
        owners, _targets, array, handoffs = self._call  # alive until C returns
        handed = lib.onair_forward(array, len(owners), batch.struct, now, ntp_time, handoffs)
        return [_copied(owners, handoffs[i]) for i in range(handed)]

    def _rebuild(self) -> None:
        owners = tuple(self._members)
        targets = tuple(self._members[o] for o in owners)
        self._call = (
            owners,
            targets,
            ffi.new("struct onair_target *[]", targets),
            ffi.new("struct onair_handoff[]", max(len(owners), 1)),
        )


def _copied(owners: tuple[Owner, ...], handoff: Any) -> Handoff[Owner]:
    """``handoff`` (a ``struct onair_handoff`` and the spill buffer it points into, valid
    until the next ``onair_forward``) as Python objects."""
    sizes = list(handoff.spill_sizes[0 : handoff.spill_count])
    total = sum(sizes)
    out = ffi.new("unsigned char[]", max(total, 1))
    lib.onair_spilled(handoff.spill_offset, total, out)
    data = ffi.buffer(out, total)[:]
    datagrams = []
    offset = 0
    for size in sizes:
        datagrams.append(data[offset : offset + size])
        offset += size
    return Handoff(owners[handoff.target], handoff.resume, datagrams)
