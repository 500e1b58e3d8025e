"""The upkeep of viewers the C loop forwards (their counters into the sender reports, their
connection checked) never holds up a batch, nor the packets behind it: it runs after the
batch that found it due, a slice of viewers per turn of the event loop. Real aiortc peers."""

import asyncio
from collections import Counter

import pytest

from sfu import Router
from sfu import producer as producer_module
from sfu.downtrack import DownTrack
from sfu.producer import Producer
from testpeers import TestClients, wait_until
from testpeers.aiortc_hooks import sender_report_state
from tests.sfu.forwarding_loop import needs_c_loop

pytestmark = needs_c_loop

VIEWERS = 5
SLICE = 2


async def test_upkeep_runs_after_the_batch_a_slice_of_viewers_per_turn(
    router: Router, clients: TestClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "NATIVE_UPKEEP_SLICE", SLICE)
    monkeypatch.setattr(producer_module, "NATIVE_UPKEEP_SECONDS", 0.05)
    loop = asyncio.get_running_loop()
    turn = 0
    ticking = True
    flushing = False
    upkept: list[tuple[int, str, str, bool]] = []  # turn, kind, down track, inside a flush

    def tick() -> None:  # one call per turn of the event loop
        nonlocal turn
        turn += 1
        if ticking:
            loop.call_soon(tick)

    flush = Producer.flush

    def timed_flush(self: Producer) -> None:
        nonlocal flushing
        flushing = True
        try:
            flush(self)
        finally:
            flushing = False

    upkeep = DownTrack.native_upkeep

    def recorded_upkeep(self: DownTrack) -> None:
        upkept.append((turn, self.kind, self.id, flushing))
        upkeep(self)

    monkeypatch.setattr(Producer, "flush", timed_flush)
    monkeypatch.setattr(DownTrack, "native_upkeep", recorded_upkeep)

    await clients.publish(router)
    for _ in range(VIEWERS):
        await clients.subscribe(router, decode=False)
    down_tracks = [c for v in router.viewers for c in v.down_tracks]
    assert len(down_tracks) == 2 * VIEWERS
    assert await wait_until(lambda: all(c.forwarded_natively for c in down_tracks), within=15)
    upkept.clear()
    loop.call_soon(tick)
    await asyncio.sleep(0.5)
    ticking = False

    assert upkept
    assert not [u for u in upkept if u[3]], "upkeep ran inside a batch's flush"
    for kind in ("audio", "video"):
        ids = {c.id for c in down_tracks if c.kind == kind}
        of_kind = [(t, down_track) for t, k, down_track, _ in upkept if k == kind]
        assert {down_track for _, down_track in of_kind} == ids
        per_turn = Counter(t for t, _ in of_kind)
        assert max(per_turn.values()) == SLICE  # never every viewer in one turn
    # what the C loop sent reached the sender reports through the upkeep (nothing here read
    # a down track's counters, which would take them too); the Python loop sent the first only
    assert min(sender_report_state(c.sender)[3] for c in down_tracks) >= 10
