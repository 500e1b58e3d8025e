import pytest
from aiortc.rtp import RtpPacket

from sfu.munger import RtpMunger
from sfu.packet_cache import PacketCache


def test_offsets_are_kept_within_a_source() -> None:
    munger = RtpMunger(90000)
    first = munger.map(1000, 50000, now=0.0)
    assert first is not None
    seq, ts = first
    assert munger.map(1001, 53000, now=0.03) == ((seq + 1) & 0xFFFF, ts + 3000)
    assert munger.map(1003, 56000, now=0.06) == ((seq + 3) & 0xFFFF, ts + 6000)
    assert munger.map(1002, 56000, now=0.07) == ((seq + 2) & 0xFFFF, ts + 6000)  # reordered
    assert munger.map(999, 47000, now=0.08) is None  # before the first forwarded packet
    assert munger.incoming_sequence_number((seq + 2) & 0xFFFF) == 1002
    assert munger.incoming_sequence_number((seq - 5) & 0xFFFF) is None


def test_a_long_source_keeps_mapping_round_the_sequence_space() -> None:
    """Hours of one broadcast: the 16-bit sequence number wraps many times."""
    munger = RtpMunger(90000)
    first = munger.map(1000, 0, now=0.0)
    assert first is not None
    for i in range(1, 3 * 65536):
        mapped = munger.map((1000 + i) & 0xFFFF, (i * 3000) & 0xFFFFFFFF, now=i / 160)
        assert mapped == ((first[0] + i) & 0xFFFF, (first[1] + i * 3000) & 0xFFFFFFFF), i
    newest = (1000 + 3 * 65536 - 1) & 0xFFFF
    assert munger.map((newest - 100) & 0xFFFF, 0, now=0.0) is not None  # reordered: kept
    assert munger.map((newest - 20000) & 0xFFFF, 0, now=0.0) is None  # ancient: dropped
    assert munger.incoming_sequence_number((first[0] + 3 * 65536 - 5) & 0xFFFF) == (newest - 4)


def test_a_new_source_continues_the_sequence_and_advances_time() -> None:
    munger = RtpMunger(90000)
    seq, ts = munger.map(65535, 4294967000, now=0.0) or (0, 0)
    last = munger.map(0, 4294967000 + 3000 - (1 << 32), now=0.033)  # both wrap
    assert last == ((seq + 1) & 0xFFFF, (ts + 3000) & 0xFFFFFFFF)
    munger.switch_source()
    assert munger.incoming_sequence_number(last[0]) is None
    switched = munger.map(20000, 123, now=2.033)
    assert switched == ((last[0] + 1) & 0xFFFF, (last[1] + 180000) & 0xFFFFFFFF)
    assert munger.map(20001, 3123, now=2.066) == (
        (last[0] + 2) & 0xFFFF,
        (last[1] + 183000) & 0xFFFFFFFF,
    )


def test_seconds_behind_measures_from_the_newest_packet_round_the_timestamp_space() -> None:
    munger = RtpMunger(90000)
    newest = munger.map(1000, 0xFFFFFF00, now=0.0)
    assert newest is not None
    assert munger.seconds_behind(newest[1]) == 0.0
    assert munger.seconds_behind((newest[1] - 90000) & 0xFFFFFFFF) == 1.0
    assert munger.seconds_behind((newest[1] + 3000) & 0xFFFFFFFF) == 0.0  # newer
    later = munger.map(1100, (0xFFFFFF00 + 45000) & 0xFFFFFFFF, now=0.5)  # ts wrapped
    assert later is not None
    assert munger.seconds_behind(newest[1]) == 0.5


def test_packet_cache_returns_only_the_packet_asked_for() -> None:
    cache = PacketCache(4)
    for seq in range(10):
        cache.put(RtpPacket(sequence_number=seq))
    assert cache.get(9) is not None
    assert cache.get(6) is not None
    assert cache.get(5) is None  # overwritten by 9
    cache.clear()
    assert cache.get(9) is None
    with pytest.raises(ValueError, match="power of two"):
        PacketCache(1000)


def _vp8(picture_id: int, tl0: int, body: bytes = b"\x9d\x01\x2a") -> bytes:
    """A VP8 payload whose descriptor carries a 15-bit picture ID, TL0PICIDX and TID."""
    return bytes([0x90, 0xE0, 0x80 | picture_id >> 8, picture_id & 0xFF, tl0, 0x40]) + body


def _vp8_fields(payload: bytes) -> tuple[int, int]:
    return ((payload[2] & 0x7F) << 8) | payload[3], payload[4]


def test_vp8_picture_ids_and_tl0picidx_continue_across_a_source_switch() -> None:
    """Layers number their pictures each on their own: the second layer's pictures follow
    the first's, whether its numbers were behind or ahead, round both fields' wrap."""
    munger = RtpMunger(90000, vp8=True)
    assert munger.map(100, 0, now=0.0) is not None
    first = munger.map_vp8(_vp8(32766, 255), 0)
    assert _vp8_fields(first) == (32766, 255)  # the first source keeps its numbers
    assert first[5:] == b"\x40\x9d\x01\x2a"  # the rest is untouched
    munger.map(101, 3000, now=0.05)
    assert _vp8_fields(munger.map_vp8(_vp8(32767, 0), 0)) == (32767, 0)
    munger.switch_source()
    munger.map(7000, 90, now=0.1)
    assert _vp8_fields(munger.map_vp8(_vp8(12000, 40), 0)) == (0, 1)
    munger.map(7001, 3090, now=0.15)
    assert _vp8_fields(munger.map_vp8(_vp8(12001, 40), 0)) == (1, 1)
    munger.map(7002, 6090, now=0.2)
    assert _vp8_fields(munger.map_vp8(_vp8(12002, 41), 0)) == (2, 2)
    munger.switch_source()
    munger.map(300, 0, now=0.25)  # back to a layer whose numbers are far ahead
    assert _vp8_fields(munger.map_vp8(_vp8(30000, 200), 0)) == (3, 3)
    # a retransmission of an older picture of the same source maps by the same offsets
    assert _vp8_fields(munger.map_vp8(_vp8(29999, 199), 0)) == (2, 2)
    munger.map(301, 3000, now=0.3)
    assert _vp8_fields(munger.map_vp8(_vp8(30001, 200), 0)) == (4, 3)


def test_vp8_mapping_leaves_other_payloads_and_codecs_alone() -> None:
    munger = RtpMunger(90000, vp8=True)
    munger.map(1, 0, now=0.0)
    plain = bytes([0x10, 0x9D, 0x01, 0x2A])  # no extension octet: nothing to map
    assert munger.map_vp8(plain, 0) is plain
    assert munger.map_vp8(b"\x90", 0) == b"\x90"  # truncated
    assert munger.map_vp8(bytes([0x90, 0x80]), 0) == bytes([0x90, 0x80])  # I but no ID octet
    header = b"\x80" * 12
    packet = header + _vp8(500, 7)
    assert munger.map_vp8(packet, len(header))[:12] == header
    other = RtpMunger(90000)  # H.264: its frames are told apart by sequence numbers
    other.map(1, 0, now=0.0)
    assert other.map_vp8(_vp8(500, 7), 0) == _vp8(500, 7)


def test_a_vp8_seven_bit_picture_id_continues_in_its_own_width() -> None:
    munger = RtpMunger(90000, vp8=True)
    munger.map(1, 0, now=0.0)
    narrow = bytes([0x90, 0x80, 0x7F, 0x9D])
    assert munger.map_vp8(narrow, 0) == narrow
    munger.switch_source()
    munger.map(50, 0, now=0.1)
    assert munger.map_vp8(bytes([0x90, 0x80, 0x10, 0x9D]), 0) == bytes([0x90, 0x80, 0x00, 0x9D])
