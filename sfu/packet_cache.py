"""A producer's recent RTP packets, kept to answer viewers' NACKs."""

from __future__ import annotations

from aiortc.rtp import RtpPacket


class PacketCache:
    """A ring of the last ``size`` packets indexed by sequence number."""

    __slots__ = ("_mask", "_packets")

    def __init__(self, size: int) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("packet cache size must be a power of two")
        self._mask = size - 1
        self._packets: list[RtpPacket | None] = [None] * size

    def put(self, packet: RtpPacket) -> None:
        self._packets[packet.sequence_number & self._mask] = packet

    def get(self, sequence_number: int) -> RtpPacket | None:
        packet = self._packets[sequence_number & self._mask]
        if packet is None or packet.sequence_number != sequence_number:
            return None
        return packet

    def clear(self) -> None:
        self._packets = [None] * len(self._packets)
