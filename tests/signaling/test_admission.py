"""Joins wait for their turn (``signaling.admission``, docs/SECURITY.md "Joins"): a fair
queue with a cap and a deadline, for the watch page's WebSocket and WHEP, with real peers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import AsyncClient

from broadcast.models import Stream
from onair.exceptions import ServiceUnavailableError
from signaling import admission
from signaling.admission import JoinAdmission, JoinTicket, join_admission
from signaling.gateway import gateway
from testpeers import TestViewer, wait_until
from tests.signaling.http_clients import SDP, silent_offer
from tests.signaling.test_consumers import Socket
from tests.signaling.test_sessions import ClientAt, caps, post_silent, refused

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def one_at_a_time(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One place; a join past its offer/answer keeps it until its viewer is up or gone
    (not a second: what these tests do meanwhile takes longer on a loaded machine)."""
    caps(settings, JOIN_CONCURRENCY=1)
    monkeypatch.setattr(admission, "ANSWERED_HOLD_SECONDS", 60.0)


async def _waiting(queue: JoinAdmission, address: str | None = None) -> asyncio.Task[JoinTicket]:
    """A join that has to wait, once it is in the queue."""
    before = queue.waiting
    task = asyncio.ensure_future(queue.enter(address=address))
    assert await wait_until(lambda: queue.waiting == before + 1, 5)
    return task


async def test_joins_are_admitted_in_the_order_they_came(one_at_a_time: None) -> None:
    queue = JoinAdmission()
    first = queue.try_enter()
    assert first is not None
    assert queue.try_enter() is None
    waiting = [await _waiting(queue) for _ in range(3)]
    admitted: list[int] = []
    for index, task in enumerate(waiting):
        task.add_done_callback(lambda _, index=index: admitted.append(index))

    first.release()
    first.release()  # twice is once
    for index, task in enumerate(waiting):
        ticket = await task
        assert admitted == list(range(index + 1))
        assert queue.active == 1
        ticket.release()
    assert (queue.active, queue.waiting) == (0, 0)


async def test_one_address_holds_at_most_half_the_places(settings: Any) -> None:
    caps(settings, JOIN_CONCURRENCY=4)
    queue = JoinAdmission()
    flood = [queue.try_enter(address="192.0.2.1") for _ in range(2)]
    assert all(flood)
    assert queue.try_enter(address="192.0.2.1") is None
    third = await _waiting(queue, "192.0.2.1")
    # Another address goes ahead of the flood's waiting join, up to the last place.
    assert queue.try_enter(address="198.51.100.2") is not None
    assert queue.try_enter(address="198.51.100.3") is not None
    late = await _waiting(queue, "198.51.100.4")
    ticket = flood[0]
    assert ticket is not None
    ticket.release()  # the flood's own place: its waiting join may take it, first in line
    assert (await third) is not None
    assert not late.done()
    late.cancel()


async def test_a_full_queue_refuses_with_retry_after(settings: Any) -> None:
    caps(settings, JOIN_CONCURRENCY=1, JOIN_QUEUE_MAX=1)
    queue = JoinAdmission()
    assert queue.try_enter() is not None
    waiting = await _waiting(queue)
    with pytest.raises(ServiceUnavailableError) as refusal:
        await queue.enter()
    assert refusal.value.code == "join_queue_full"
    assert refusal.value.retry_after
    waiting.cancel()


async def test_a_join_waits_at_most_the_deadline(settings: Any) -> None:
    caps(settings, JOIN_CONCURRENCY=1, JOIN_QUEUE_SECONDS=0.1)
    queue = JoinAdmission()
    held = queue.try_enter()
    with pytest.raises(ServiceUnavailableError) as refusal:
        await queue.enter()
    assert refusal.value.code == "join_queue_timeout"
    assert refusal.value.retry_after
    assert (queue.waiting, queue.active) == (0, 1)
    assert held is not None
    held.release()
    assert queue.active == 0


async def test_a_join_that_leaves_the_queue_is_skipped(one_at_a_time: None) -> None:
    queue = JoinAdmission()
    held = queue.try_enter()
    gone, next_one = await _waiting(queue), await _waiting(queue)
    gone.cancel()
    assert await wait_until(lambda: queue.waiting == 1, 5)
    assert held is not None
    held.release()
    (await next_one).release()
    assert (queue.active, queue.waiting) == (0, 0)


async def test_a_place_is_held_at_most_hold_seconds(
    one_at_a_time: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "HOLD_SECONDS", 0.05)
    queue = JoinAdmission()
    assert queue.try_enter() is not None  # never released by its holder
    assert (await asyncio.wait_for(queue.enter(), 5)).held


async def test_a_join_past_its_offer_and_answer_holds_its_place_briefly(
    one_at_a_time: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that got its answer (or the server's offer) and never connects: its place
    goes to the next join after ANSWERED_HOLD_SECONDS, not HOLD_SECONDS."""
    monkeypatch.setattr(admission, "HOLD_SECONDS", 60.0)
    monkeypatch.setattr(admission, "ANSWERED_HOLD_SECONDS", 0.05)
    queue = JoinAdmission()
    ticket = queue.try_enter()
    assert ticket is not None
    ticket.bind("viewer-that-never-connects")
    assert (await asyncio.wait_for(queue.enter(), 5)).held


DB = pytest.mark.django_db(transaction=True)


@DB
async def test_a_watch_page_waits_for_its_turn_and_joins(
    one_at_a_time: None, live_stream: Stream
) -> None:
    stream = live_stream
    first = Socket(f"/ws/watch/{stream.slug}/", AnonymousUser())
    second = Socket(f"/ws/watch/{stream.slug}/", AnonymousUser())
    leaving = Socket(f"/ws/watch/{stream.slug}/", AnonymousUser())
    viewers = [TestViewer(), TestViewer()]
    try:
        for socket in (first, second, leaving):
            assert (await socket.open())["type"] == "welcome"
        await first.send({"type": "watch"})
        offer = await first.expect("offer")  # the one place, until its connection is up
        await second.send({"type": "watch"})
        assert (await second.expect("queued"))["position"] == 1
        await leaving.send({"type": "watch"})
        assert (await leaving.expect("queued"))["position"] == 2
        await second.send({"type": "ping"})  # a waiting page's socket serves it meanwhile
        await second.expect("pong")
        await leaving.close()  # leaves the queue: no peer connection is made for it

        await first.send({"type": "answer", "sdp": await viewers[0].answer(offer["sdp"])})
        offer = await second.expect("offer")
        await second.send({"type": "answer", "sdp": await viewers[1].answer(offer["sdp"])})
        for viewer in viewers:
            assert await viewer.wait_for_frames(video=5, within=20)
        router = gateway.router(str(stream.pk))
        assert router is not None
        assert len(router.viewers) == 2
        assert await wait_until(lambda: join_admission().active == 0, 10)
    finally:
        for socket in (first, second):
            await socket.close()
        for viewer in viewers:
            await viewer.close()


@DB
async def test_whep_waits_for_its_turn_then_503_when_the_queue_is_full(
    settings: Any, live_stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    caps(settings, JOIN_CONCURRENCY=1, JOIN_QUEUE_MAX=1)
    monkeypatch.setattr(admission, "ANSWERED_HOLD_SECONDS", 60.0)  # the holder keeps it
    stream = live_stream
    holder = await post_silent(AsyncClient(), stream)  # never does ICE: holds the place
    assert holder.status_code == 201
    waiting = asyncio.ensure_future(post_silent(ClientAt("192.0.2.9"), stream))
    assert await wait_until(lambda: join_admission().waiting == 1, 10)
    full = await post_silent(ClientAt("192.0.2.10"), stream)
    assert refused(full, 503, "join_queue_full"), full.content
    assert "Retry-After" in full["Access-Control-Expose-Headers"]

    # The holder goes: its place passes to the waiting request.
    assert (await AsyncClient().delete(holder["Location"])).status_code == 200
    admitted = await asyncio.wait_for(waiting, 10)
    assert admitted.status_code == 201, admitted.content
    await AsyncClient().delete(admitted["Location"])


@DB
async def test_whep_past_the_queue_deadline_is_503(
    settings: Any, live_stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    caps(settings, JOIN_CONCURRENCY=1, JOIN_QUEUE_SECONDS=0.2)
    monkeypatch.setattr(admission, "ANSWERED_HOLD_SECONDS", 60.0)  # the holder keeps it
    stream = live_stream
    http = AsyncClient()
    holder = await http.post(f"/whep/{stream.slug}", data=silent_offer(), content_type=SDP)
    assert holder.status_code == 201
    late = await post_silent(ClientAt("192.0.2.11"), stream)
    assert refused(late, 503, "join_queue_timeout"), late.content
    router = gateway.router(str(stream.pk))
    assert router is not None
    assert len(router.viewers) == 1
    await http.delete(holder["Location"])
