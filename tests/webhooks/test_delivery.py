"""Acceptance 2 (#24), in one process: a real broadcast (an aiortc publisher over WHIP
through the ASGI app and the in-process SFU) sends ``stream.live`` and ``stream.ended`` to a
real HTTP receiver, signed; with the receiver down at first, the delivery loop retries
until it comes up. And a delivery refused at its attempt when its host is not public."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient

from broadcast.services import stream_create
from signaling.gateway import gateway
from testpeers import wait_until, wait_until_awaited
from tests.daphne import free_port
from tests.signaling.http_clients import WhipClient
from tests.webhooks.conftest import onair
from tests.webhooks.receiver import Receiver
from webhooks.delivery import deliver_forever
from webhooks.models import WebhookDelivery
from webhooks.services import webhook_endpoint_create, webhook_endpoint_test

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
async def delivering(fast_webhooks: None) -> AsyncIterator[None]:
    """The delivery loop each server process runs (``onair.serve``)."""
    task = asyncio.create_task(deliver_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@database_sync_to_async
def delivery(event_type: str) -> WebhookDelivery | None:
    return WebhookDelivery.objects.filter(event_type=event_type).first()


async def attempted(event_type: str, times: int) -> bool:
    """The delivery was tried ``times`` times, and its last error is known."""
    row = await delivery(event_type)
    return row is not None and row.attempts >= times and row.last_error != ""


async def test_a_broadcast_s_events_arrive_signed_once_the_receiver_is_up(
    delivering: None,
) -> None:
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")
    stream, key = await database_sync_to_async(stream_create)(owner=owner, title="Launch")
    receiver = Receiver(free_port())  # down: nothing listens on its port yet
    issued = await database_sync_to_async(webhook_endpoint_create)(
        owner=owner, url=receiver.url, events=["stream.live", "stream.ended"]
    )
    publisher = WhipClient(AsyncClient(), stream.slug, key.secret)
    try:
        assert (await publisher.publish()).status_code == 201
        assert await wait_until_awaited(
            lambda: gateway.publisher_active(stream_id=str(stream.pk)), within=20
        )
        assert await wait_until_awaited(lambda: attempted("stream.live", 2), within=20)
        assert (await publisher.delete()).status_code == 200
        assert await wait_until_awaited(lambda: attempted("stream.ended", 1), within=20)
        live = await delivery("stream.live")
        assert live is not None
        assert live.status == WebhookDelivery.Status.PENDING
        assert live.response_status is None
        assert "refused" in live.last_error.lower(), live.last_error

        receiver.start()
        assert await wait_until(lambda: len(receiver.received) >= 2, within=20)
    finally:
        await publisher.close()
        await gateway.close_all()
        receiver.stop()

    by_type = {item.event["type"]: item for item in receiver.received}
    assert set(by_type) == {"stream.live", "stream.ended"}
    for event_type, item in by_type.items():
        assert item.signed_with(issued.secret), item.headers
        assert not item.signed_with("whsec_not-the-secret")
        assert item.path == "/hooks/onair?source=test"
        assert item.headers["Content-Type"] == "application/json"
        assert item.headers["OnAir-Webhook-Id"] == item.event["id"]
        assert item.event["data"]["stream"]["slug"] == stream.slug
        row = await delivery(event_type)
        assert row is not None
        assert (row.status, row.response_status, row.last_error) == ("delivered", 204, "")
    assert by_type["stream.live"].event["data"]["stream"]["state"] == "live"
    ended = by_type["stream.ended"].event["data"]["stream"]
    assert (ended["state"], ended["end_reason"]) == ("ended", "publisher")
    live = await delivery("stream.live")
    assert live is not None
    assert live.attempts >= 3  # two refused, then the one accepted


async def test_a_delivery_to_a_host_no_longer_allowed_is_refused_at_its_attempt(
    delivering: None,
) -> None:
    """Saved while private addresses were allowed; at the attempt they are not: nothing is
    sent, and the log says why."""
    owner = await database_sync_to_async(User.objects.create_user)("owner", password="pw")
    receiver = Receiver(free_port()).start()
    try:
        issued = await database_sync_to_async(webhook_endpoint_create)(
            owner=owner, url=receiver.url, events=["stream.live"]
        )
        with onair(WEBHOOK_ALLOW_PRIVATE=False, WEBHOOK_POLL_SECONDS=0.2):
            test = await database_sync_to_async(webhook_endpoint_test)(endpoint=issued.endpoint)
            assert await wait_until_awaited(lambda: attempted("webhook.test", 1), within=20)
        row = await delivery("webhook.test")
        assert row is not None
        assert row.pk == test.pk
        assert row.last_error.startswith("refused: ")
        assert "not a public address" in row.last_error
        assert receiver.received == []
    finally:
        receiver.stop()
