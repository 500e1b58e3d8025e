"""A process that stops tells the viewers of its broadcasts and takes no new session; one that
starts ends, after the grace period, the broadcasts a dead process left live, unless their
publisher came back, and resets the viewer counts it left (embedded mode)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User

from broadcast.models import Stream
from broadcast.services import stream_create, stream_go_live
from onair.exceptions import ServiceUnavailableError
from signaling.gateway import gateway
from signaling.gateway.embedded import EmbeddedGateway
from signaling.lifecycle import embedded_sfu_started
from testpeers import TestPublisher, wait_until_awaited
from tests.signaling.test_consumers import Socket
from viewers.models import ViewerSession
from viewers.services import viewer_join

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

GRACE_SECONDS = 1.0


async def _live_stream(owner: User, title: str) -> Stream:
    stream, _ = await database_sync_to_async(stream_create)(owner=owner, title=title)
    return await database_sync_to_async(stream_go_live)(stream=stream)


async def _state(stream: Stream) -> tuple[str, int]:
    await database_sync_to_async(stream.refresh_from_db)()
    return stream.state, stream.viewer_count


async def test_broadcasts_left_live_end_after_the_grace_unless_their_publisher_returns(
    owner: User, settings: Any
) -> None:
    settings.ONAIR = {**settings.ONAIR, "PUBLISHER_GRACE_SECONDS": GRACE_SECONDS}
    returning = await _live_stream(owner, "Comes back")
    abandoned = await _live_stream(owner, "Gone for good")
    for stream in (returning, abandoned):  # counted by the process that died
        await database_sync_to_async(viewer_join)(stream=stream, user=AnonymousUser())
    publisher = TestPublisher()
    try:
        await embedded_sfu_started()
        assert await _state(returning) == ("live", 0)
        assert await _state(abandoned) == ("live", 0)
        open_sessions = ViewerSession.objects.filter(ended_at__isnull=True).count
        assert await database_sync_to_async(open_sessions)() == 0

        result = await gateway.publish(
            stream_id=str(returning.pk), offer_sdp=await publisher.create_offer()
        )
        await publisher.accept_answer(result.answer_sdp)

        async def abandoned_ended() -> bool:
            return (await _state(abandoned))[0] == "ended"

        assert await wait_until_awaited(abandoned_ended, within=GRACE_SECONDS + 5)
        await asyncio.sleep(0.5)  # the other broadcast's grace ended at the same time
        assert (await _state(returning))[0] == "live"
    finally:
        await publisher.close()
        await gateway.close_all()


async def test_a_stopping_gateway_tells_viewers_and_takes_no_new_session(owner: User) -> None:
    stream = await _live_stream(owner, "Restarting")
    stopping = EmbeddedGateway()
    publisher, late = TestPublisher(), TestPublisher()
    watch = Socket(f"/ws/watch/{stream.slug}/")
    watch.comm.scope["user"] = AnonymousUser()
    try:
        result = await stopping.publish(
            stream_id=str(stream.pk), offer_sdp=await publisher.create_offer()
        )
        await publisher.accept_answer(result.answer_sdp)
        assert (await watch.open())["type"] == "welcome"

        await stopping.stopping()
        assert await watch.expect("publisher") == {"type": "publisher", "status": "reconnecting"}
        with pytest.raises(ServiceUnavailableError) as refused:
            await stopping.publish(stream_id=str(stream.pk), offer_sdp=await late.create_offer())
        assert refused.value.code == "restarting"
        await stopping.close_all()
        assert stopping.router(stream) is None
        assert (await _state(stream))[0] == "live"  # a publisher that reconnects carries it on
    finally:
        await watch.close()
        await publisher.close()
        await late.close()
        await stopping.close_all()
