"""The bench server's log of forwarding batches and garbage collections (bench.server)."""

import gc
from types import SimpleNamespace

from bench.measure import Pauses
from bench.server import FanoutLog


def test_batches_are_timed_with_their_track_and_size_and_empty_flushes_are_left_out() -> None:
    log = FanoutLog()
    flushed: list[int] = []

    def flush(producer: SimpleNamespace) -> None:
        flushed.append(producer.held_packets)
        producer.held_packets = 0

    timed = log.wrap(flush)
    video = SimpleNamespace(kind="video", held_packets=3)
    timed(video)
    timed(video)  # nothing left to forward
    assert flushed == [3, 0]
    ((started, kind, packets, seconds),) = log.since(0.0)
    assert (kind, packets) == ("video", 3)
    assert seconds >= 0
    assert log.since(started + 1) == []


def test_garbage_collections_are_logged_with_their_generation() -> None:
    log = FanoutLog()
    callback = log.watch_gc()
    try:
        gc.collect(2)
    finally:
        gc.callbacks.remove(callback)
    assert ("gc", 2) in [(kind, generation) for _, kind, generation, _ in log.since(0.0)]


def test_garbage_collections_are_described_for_the_progress_and_the_report() -> None:
    assert Pauses.of([]).describe() == "ran no garbage collection"
    assert Pauses.of([(2, 0.05), (0, 0.001)]).describe() == (
        "ran 2 garbage collections (1 full), 51.0 ms in all, the longest 50.00 ms"
    )
    assert Pauses.of([(0, 0.002)]).describe().startswith("ran 1 garbage collection (0 full)")
