"""What a producer forwards to and with: its batches of packets (``Batch``), the forward
groups that serialize a batch once for many outgoing streams (``ForwardGroup``), what a
group forwards to (``Forwarder``: a viewer's ``sfu.downtrack.DownTrack``, or a pipe to an edge
router, ``sfu.pipe``) and what takes every packet as it comes (``PacketTap``).
``sfu.producer`` and ``sfu.downtrack`` both build on this module, which imports neither."""

from __future__ import annotations

from typing import Any, Protocol

from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

from sfu import native


class Batch:
    """The packets a producer forwards together: each with whether it starts a keyframe."""

    __slots__ = ("keyframes", "packets")

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.keyframes: list[bool] = []

    def first_keyframe(self) -> int | None:
        """The index of the first packet that starts a keyframe, if any does."""
        return self.keyframes.index(True) if True in self.keyframes else None


class Forwarder(Protocol):
    """Where a forward group sends packets: a viewer's ``DownTrack``, or a pipe to an
    edge router (``sfu.pipe``)."""

    @property
    def waiting_keyframe(self) -> bool: ...

    def forward(self, templates: list[bytes], batch: Batch, now: float, ntp: int) -> None: ...


class NativeForwarder(Forwarder, Protocol):
    """A forwarder the C loop (``sfu.native``) may forward to: a viewer's ``DownTrack``."""

    def handed_back(
        self,
        handoff: native.Handoff[NativeForwarder],
        templates: list[bytes],
        batch: Batch,
        now: float,
        ntp: int,
    ) -> None: ...

    def native_upkeep(self) -> None: ...


class PacketTap(Protocol):
    """What sees every packet a producer receives, in arrival order, before any batching:
    a recording, a thumbnail (``sfu.frames`` puts the packets back into frames). It is
    called on the hot path: it must be quick, and never await."""

    @property
    def waiting_keyframe(self) -> bool: ...

    def on_packet(self, packet: RtpPacket, now: float) -> None: ...


class Attached(Protocol):
    """What a producer holds of a viewer track attached to it: closing the producer closes
    it."""

    def close(self, reason: str) -> None: ...


class ForwardGroup:
    """Forwarders whose outgoing packets differ only in SSRC, sequence number and
    timestamp: same payload type, mid and header-extension ids. Each incoming
    packet is serialized once per group into a template the forwarders patch.

    With ``native`` (the C loop built and on), viewers move into ``targets`` once they can
    (see ``DownTrack``), and the C loop forwards to all of them in one call; the others
    (``python_forwarders``: viewers not there yet, and pipes) forward themselves."""

    __slots__ = (
        "extensions_map",
        "forwarders",
        "key",
        "mid",
        "payload_type",
        "python_forwarders",
        "targets",
    )

    def __init__(
        self,
        key: tuple[object, ...],
        payload_type: int,
        mid: str | None,
        extensions_map: HeaderExtensionsMap,
        *,
        native_forwarding: bool,
    ) -> None:
        self.key = key
        self.payload_type = payload_type
        self.mid = mid
        self.extensions_map = extensions_map
        self.forwarders: tuple[Forwarder, ...] = ()
        self.python_forwarders: tuple[Forwarder, ...] = ()
        self.targets: native.TargetSet[NativeForwarder] | None = (
            native.TargetSet() if native_forwarding and native.available() else None
        )

    def add(self, forwarder: Forwarder) -> None:
        self.forwarders = (*self.forwarders, forwarder)
        self._sort()

    def remove(self, forwarder: Forwarder) -> None:
        self.forwarders = tuple(f for f in self.forwarders if f is not forwarder)
        if self.targets is not None:
            self.targets.discard(forwarder)  # type: ignore[arg-type]
        self._sort()

    def enter_native(self, forwarder: NativeForwarder, target: Any) -> None:
        """From now on the C loop forwards to ``forwarder`` through ``target``."""
        assert self.targets is not None
        self.targets.add(forwarder, target)
        self._sort()

    def leave_native(self, forwarder: NativeForwarder) -> None:
        if self.targets is not None:
            self.targets.discard(forwarder)
        self._sort()

    def _sort(self) -> None:
        targets = self.targets
        self.python_forwarders = tuple(
            f for f in self.forwarders if targets is None or f not in targets
        )

    def render(self, packet: RtpPacket, abs_send_time: int) -> bytes:
        """The packet serialized for this group, with zero SSRC, sequence number
        and timestamp for the forwarder to fill in."""
        out = RtpPacket(
            payload_type=self.payload_type,
            marker=packet.marker,
            payload=packet.payload,
        )
        out.extensions = HeaderExtensions(
            mid=self.mid,
            abs_send_time=abs_send_time,
            audio_level=packet.extensions.audio_level,
        )
        return out.serialize(self.extensions_map)
