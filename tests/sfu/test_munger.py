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
