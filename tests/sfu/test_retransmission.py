"""The retransmission budget's rules, one at a time (tests/sfu/test_feedback.py has real
peers: a NACK flood kept within it, and a lossy viewer recovering everything)."""

from sfu.retransmission import RetransmissionBudget, RetransmissionLimits

UNLIMITED = RetransmissionLimits(
    share=0.0,
    packets_per_second=0.0,
    bytes_per_second=0.0,
    burst_packets=10_000,
    burst_bytes=10_000_000,
    per_nack=10_000,
    min_interval_seconds=0.1,
    max_resends=1_000,
)


def _answer(
    budget: RetransmissionBudget,
    lost: list[int],
    now: float,
    *,
    size: int = 1000,
    forwarded: tuple[int, int] = (0, 0),
    rtt: float | None = None,
) -> list[int]:
    """What the budget lets through, each resent as ``size`` bytes."""
    admitted = []
    for sequence_number in budget.admit(
        lost, now=now, forwarded_packets=forwarded[0], forwarded_bytes=forwarded[1], rtt=rtt
    ):
        admitted.append(sequence_number)
        budget.resent(sequence_number, size, now)
    return admitted


def test_only_the_last_per_nack_sequence_numbers_of_a_nack_are_read() -> None:
    budget = RetransmissionBudget(RetransmissionLimits(per_nack=4), now=0.0)
    assert _answer(budget, list(range(100, 110)), now=0.0) == [106, 107, 108, 109]
    assert budget.refused == 6


def test_a_packet_is_not_resent_again_within_the_interval_or_one_rtt() -> None:
    budget = RetransmissionBudget(UNLIMITED, now=0.0)
    assert _answer(budget, [5, 5, 6, 65541], now=0.0) == [5, 6]  # once per NACK, too
    assert _answer(budget, [5], now=0.05) == []
    assert _answer(budget, [5], now=0.11) == [5]
    assert _answer(budget, [5], now=0.3, rtt=0.25) == []  # one RTT, when longer
    assert _answer(budget, [5], now=0.37, rtt=0.25) == [5]
    assert budget.refused == 4


def test_a_packet_is_resent_at_most_max_resends_times() -> None:
    limits = RetransmissionLimits(**{**UNLIMITED.__dict__, "max_resends": 3})
    budget = RetransmissionBudget(limits, now=0.0)
    answered = [_answer(budget, [7], now=i * 0.2) for i in range(6)]
    assert answered == [[7], [7], [7], [], [], []]


def test_a_packet_that_could_not_be_resent_is_not_looked_up_again_within_the_interval() -> None:
    limits = RetransmissionLimits(**{**UNLIMITED.__dict__, "max_resends": 1})
    budget = RetransmissionBudget(limits, now=0.0)
    assert list(budget.admit([9], now=0.0, forwarded_packets=0, forwarded_bytes=0, rtt=None))
    budget.missed(9, now=0.0)  # not cached yet, say
    assert _answer(budget, [9], now=0.05) == []
    assert _answer(budget, [9], now=0.2) == [9]  # a miss is no resend
    assert _answer(budget, [9], now=0.4) == []  # that was its one resend


def test_the_bucket_holds_a_burst_and_refills_with_a_share_of_the_stream_and_a_floor() -> None:
    limits = RetransmissionLimits(
        share=0.1,
        packets_per_second=10.0,
        bytes_per_second=1e9,
        burst_packets=20,
        burst_bytes=10**9,
        per_nack=1000,
    )
    budget = RetransmissionBudget(limits, now=0.0)
    assert len(_answer(budget, list(range(50)), now=0.0)) == 20  # the burst
    assert budget.refused == 30
    # 0.5 s later, 100 packets forwarded since: 0.1 x 100 + 10 x 0.5 = 15 more
    assert len(_answer(budget, list(range(100, 150)), now=0.5, forwarded=(100, 0))) == 15
    # never more than the burst, however long the wait
    assert len(_answer(budget, list(range(200, 300)), now=100.0, forwarded=(100_000, 0))) == 20


def test_the_bucket_counts_bytes_too() -> None:
    limits = RetransmissionLimits(
        share=0.5,
        packets_per_second=0.0,
        bytes_per_second=0.0,
        burst_packets=1000,
        burst_bytes=5000,
        per_nack=1000,
    )
    budget = RetransmissionBudget(limits, now=0.0)
    # the last packet may overdraw the bytes; the next waits until they are earned back
    assert len(_answer(budget, list(range(10)), now=0.0, size=1200)) == 5
    assert _answer(budget, [20], now=1.0, size=1200) == []
    assert _answer(budget, [20], now=2.0, size=1200, forwarded=(10, 4000)) == [20]


def test_records_of_resends_older_than_the_age_limit_are_forgotten() -> None:
    limits = RetransmissionLimits(**{**UNLIMITED.__dict__, "max_resends": 1})
    budget = RetransmissionBudget(limits, now=0.0)
    assert _answer(budget, list(range(1000)), now=0.0) == list(range(1000))
    assert _answer(budget, [1], now=0.5) == []
    assert _answer(budget, [1], now=limits.max_age_seconds + 0.01) == [1]
    assert budget.remembered == 1
