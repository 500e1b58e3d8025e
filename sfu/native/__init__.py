"""The C forwarding loop (``forward.c``), when ``python -m sfu.native.build`` built it.

``lib`` is None when the module was not built (no C compiler or Python headers on the
machine) or when ``ONAIR_NATIVE_FORWARDING=0`` turns it off: every viewer is then forwarded
by the Python loop (``sfu.consumer.Consumer.forward`` and ``sfu.aiortc_adapter.
DirectRtpSender``), which sends the same packets at more CPU per viewer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from aiortc.rtp import RtpPacket

logger = logging.getLogger(__name__)


def _load() -> tuple[Any, Any]:
    """(ffi, lib) of the built module, or (None, None): off, not built, or built from
    another ``forward.c`` than this tree's (``git pull`` without ``make native``)."""
    if os.environ.get("ONAIR_NATIVE_FORWARDING", "1") == "0":
        return None, None
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
    """Whether viewers are forwarded by the C loop."""
    return lib is not None


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


class TargetSet(Generic[Owner]):
    """The viewers of a forward group that the C loop forwards: each an owner (its
    ``Consumer``) and its ``struct onair_target``."""

    __slots__ = ("_array", "_handoffs", "_members", "_owners")

    def __init__(self) -> None:
        self._members: dict[Owner, Any] = {}
        self._owners: tuple[Owner, ...] = ()
        self._array: Any = None
        self._handoffs: Any = None

    def __contains__(self, owner: object) -> bool:
        return owner in self._members

    def __len__(self) -> int:
        return len(self._owners)

    @property
    def owners(self) -> tuple[Owner, ...]:
        return self._owners

    def add(self, owner: Owner, target: Any) -> None:
        self._members[owner] = target
        self._rebuild()

    def discard(self, owner: Owner) -> None:
        if self._members.pop(owner, None) is not None:
            self._rebuild()

    def forward(self, batch: PackedBatch, now: float, ntp_time: int) -> list[tuple[Owner, Any]]:
        """Forward ``batch`` to every target; the owners handed back, with their ``struct
        onair_handoff`` (valid until the next call)."""
        handed = lib.onair_forward(
            self._array, len(self._owners), batch.struct, now, ntp_time, self._handoffs
        )
        if not handed:
            return []
        handoffs = self._handoffs
        return [(self._owners[handoffs[i].target], handoffs[i]) for i in range(handed)]

    def _rebuild(self) -> None:
        self._owners = tuple(self._members)
        count = len(self._owners)
        self._array = ffi.new("struct onair_target *[]", [self._members[o] for o in self._owners])
        self._handoffs = ffi.new("struct onair_handoff[]", max(count, 1))


def spilled(handoff: Any) -> list[bytes]:
    """The datagrams a handed-back viewer's socket did not take, in order."""
    sizes = list(handoff.spill_sizes[0 : handoff.spill_count])
    total = sum(sizes)
    out = ffi.new("unsigned char[]", max(total, 1))
    lib.onair_spilled(handoff.spill_offset, total, out)
    data = ffi.buffer(out)
    datagrams = []
    offset = 0
    for size in sizes:
        datagrams.append(bytes(data[offset : offset + size]))
        offset += size
    return datagrams
