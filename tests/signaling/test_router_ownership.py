"""A broadcast's end closes everything its router holds, and nothing of a later broadcast:
publishers POSTed and DELETEd back to back leave no peer behind whose connect deadline and
grace period would end the broadcast that is live afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient

from broadcast.models import Stream
from broadcast.services import stream_create
from signaling.gateway import gateway
from testpeers import TestPublisher, TestViewer, wait_until
from tests.signaling.http_clients import SDP, WhipClient, silent_offer
from tests.signaling.test_consumers import Socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

DEADLINE = 1.0  # connect deadline and publisher grace period
ROUNDS = 10


@pytest.fixture
def short_deadlines(settings: Any) -> None:
    settings.ONAIR = {
        **settings.ONAIR,
        "CONNECT_TIMEOUT_SECONDS": DEADLINE,
        "PUBLISHER_GRACE_SECONDS": DEADLINE,
        "MAX_SESSIONS_PER_ADDRESS": 1000,
    }


async def test_whip_post_delete_loop_leaves_no_publisher_to_end_the_next_broadcast(
    short_deadlines: None,
) -> None:
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")
    stream, key = await database_sync_to_async(stream_create)(owner=owner, title="Launch")
    http = AsyncClient()
    auth = {"Authorization": f"Bearer {key.secret}"}
    publisher = WhipClient(http, stream.slug, key.secret)
    viewer = TestViewer()
    try:
        for _ in range(ROUNDS):
            response = await http.post(
                f"/whip/{stream.slug}",
                data=silent_offer("sendonly"),
                content_type=SDP,
                headers=auth,
            )
            assert response.status_code == 201, response.content
            deleted = await http.delete(response["Location"], headers=auth)
            assert deleted.status_code == 200, deleted.content
        # Every DELETE answered once its media had stopped: nothing of those sessions is left.
        assert gateway.router(str(stream.pk)) is None
        assert len(gateway.limits()) == 0

        assert (await publisher.publish()).status_code == 201
        assert await wait_until(lambda: publisher.pc().connectionState == "connected", 20)
        await _the_live_broadcast_outlasts_earlier_deadlines(stream, viewer)
    finally:
        await viewer.close()
        await publisher.close()
        await gateway.close_all()


async def test_studio_offer_end_loop_leaves_no_publisher_to_end_the_next_broadcast(
    short_deadlines: None,
) -> None:
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")
    stream, _ = await database_sync_to_async(stream_create)(owner=owner, title="Launch")
    studio = Socket(f"/ws/studio/{stream.slug}/", owner)
    publisher = TestPublisher()
    viewer = TestViewer()
    try:
        assert (await studio.open())["type"] == "welcome"
        for _ in range(ROUNDS):
            await studio.send({"type": "offer", "sdp": silent_offer("sendonly")})
            await studio.expect("answer")
            await studio.send({"type": "end"})
        await studio.send({"type": "offer", "sdp": await publisher.create_offer()})
        await publisher.accept_answer((await studio.expect("answer"))["sdp"])
        assert await wait_until(lambda: publisher.pc.connectionState == "connected", 20)
        await _the_live_broadcast_outlasts_earlier_deadlines(stream, viewer)
    finally:
        await studio.close()
        await viewer.close()
        await publisher.close()
        await gateway.close_all()


async def _the_live_broadcast_outlasts_earlier_deadlines(
    stream: Stream, viewer: TestViewer
) -> None:
    """With the stream's publisher connected: ``viewer`` joins and decodes, and past any earlier
    publisher's connect deadline and grace period the broadcast is still live on the same
    router, publisher and sessions (that publisher and this viewer, no one else's)."""
    router = gateway.router(str(stream.pk))
    assert router is not None
    assert router.publisher is not None
    live = router.publisher.id
    result = await gateway.subscribe(
        stream_id=str(stream.pk), offer_sdp=await viewer.create_offer()
    )
    await viewer.accept_answer(result.sdp)
    assert await viewer.wait_for_frames(video=5, within=20)
    assert len(gateway.limits()) == 2

    await asyncio.sleep(2 * DEADLINE + 3)
    await database_sync_to_async(stream.refresh_from_db)()
    assert stream.state == Stream.State.LIVE
    assert gateway.router(str(stream.pk)) is router
    assert router.publisher is not None
    assert router.publisher.id == live
    assert len(gateway.limits()) == 2
