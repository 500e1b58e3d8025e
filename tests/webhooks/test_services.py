"""Webhook endpoints and the outbox: what is enqueued by which change (in its transaction),
the retry schedule and giving up, the checks on URLs, caps, retention."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from broadcast.models import Stream
from broadcast.services import stream_end, stream_go_live
from onair.exceptions import ConflictError, InvalidInputError, PermissionDeniedError
from onair.logging import redact
from onair.retention import expire_periodically
from recordings.services import RecordingFile, recording_begin, recording_finish
from signaling.gateway.contract import PublisherDown
from signaling.gateway.reactions import react
from tests.conftest import StreamFactory
from tests.webhooks.conftest import onair
from viewers.services import viewer_join, viewer_leave
from webhooks.models import TEST_EVENT, Event, WebhookDelivery
from webhooks.services import (
    IssuedEndpoint,
    delivery_body,
    retry_delay,
    webhook_deliveries_claim,
    webhook_deliveries_expire,
    webhook_deliveries_retry,
    webhook_delivery_record,
    webhook_endpoint_create,
    webhook_endpoint_test,
    webhook_endpoint_update,
)
from webhooks.transport import (
    DestinationRefused,
    destination_check,
    headers_signed,
    post,
    signature,
    signature_verify,
)

pytestmark = pytest.mark.django_db


def deliveries(event: str | None = None) -> list[WebhookDelivery]:
    rows = WebhookDelivery.objects.order_by("id")
    return list(rows.filter(event_type=event) if event else rows)


def test_a_broadcast_going_live_and_ending_enqueues_its_events(
    endpoint: IssuedEndpoint, make_stream: StreamFactory
) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    stream_end(stream=stream, reason=Stream.EndReason.API)

    live, ended = deliveries()
    assert (live.event_type, ended.event_type) == (Event.STREAM_LIVE, Event.STREAM_ENDED)
    assert live.endpoint_id == endpoint.endpoint.pk
    assert live.payload["stream"]["slug"] == stream.slug
    assert live.payload["stream"]["state"] == "live"
    assert ended.payload["stream"]["end_reason"] == "api"
    assert live.status == WebhookDelivery.Status.PENDING
    assert live.next_attempt_at <= timezone.now()


def test_no_event_without_the_state_change_that_made_it(
    endpoint: IssuedEndpoint, make_stream: StreamFactory
) -> None:
    stream, _ = make_stream()

    def live_then_fail() -> None:
        with transaction.atomic():
            stream_go_live(stream=stream)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        live_then_fail()
    assert deliveries() == []


def test_only_subscribed_active_endpoints_of_the_owner_get_an_event(
    user: User, other_user: User, fast_webhooks: None, make_stream: StreamFactory
) -> None:
    ended_only = webhook_endpoint_create(
        owner=user, url="http://127.0.0.1:9/a", events=[Event.STREAM_ENDED]
    )
    webhook_endpoint_create(
        owner=user, url="http://127.0.0.1:9/b", events=[Event.STREAM_LIVE], active=False
    )
    webhook_endpoint_create(
        owner=other_user, url="http://127.0.0.1:9/c", events=[Event.STREAM_LIVE]
    )
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    assert deliveries() == []
    stream_end(stream=stream, reason=Stream.EndReason.API)
    (ended,) = deliveries()
    assert ended.endpoint_id == ended_only.endpoint.pk


def test_a_ready_recording_enqueues_its_event(
    endpoint: IssuedEndpoint, make_stream: StreamFactory
) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    recording = recording_begin(stream=stream)
    file = RecordingFile("webm", 12.5, 1000, "VP8", "opus", 640, 360, 375)
    recording_finish(recording_id=recording.pk, reason="ended", file=file, file_name="x.webm")
    (ready,) = deliveries(Event.RECORDING_READY)
    assert ready.payload["recording"]["id"] == str(recording.pk)
    assert ready.payload["recording"]["duration"] == 12.5


@pytest.mark.django_db(transaction=True)
async def test_a_dropped_publisher_enqueues_stream_reconnecting(
    endpoint: IssuedEndpoint, make_stream: StreamFactory
) -> None:
    stream, _ = await database_sync_to_async(make_stream)()
    await database_sync_to_async(stream_go_live)(stream=stream)
    for work in react(PublisherDown(str(stream.pk), "publisher-1")):
        await work
    (reconnecting,) = await database_sync_to_async(deliveries)(Event.STREAM_RECONNECTING)
    assert reconnecting.payload["stream"]["id"] == stream.pk


def test_viewer_peaks_are_coalesced_until_their_delivery_is_due(
    endpoint: IssuedEndpoint, make_stream: StreamFactory
) -> None:
    stream, _ = make_stream()
    stream_go_live(stream=stream)
    first = viewer_join(stream=stream)
    viewer_join(stream=stream)
    (peak,) = deliveries(Event.VIEWER_PEAK)
    assert peak.payload["peak_viewers"] == 2
    assert peak.next_attempt_at > timezone.now() + timedelta(seconds=20)  # the 30 s window
    viewer_leave(session=first)
    viewer_join(stream=stream)  # back to 2: no new peak
    assert deliveries(Event.VIEWER_PEAK)[0].payload["peak_viewers"] == 2
    # Once tried, a later peak is a new delivery.
    WebhookDelivery.objects.filter(pk=peak.pk).update(attempts=1)
    viewer_join(stream=stream)
    assert [row.payload["peak_viewers"] for row in deliveries(Event.VIEWER_PEAK)] == [2, 3]


def test_claims_count_attempts_and_failures_back_off_until_given_up(
    endpoint: IssuedEndpoint,
) -> None:
    with onair(
        WEBHOOK_ALLOW_PRIVATE=True,
        WEBHOOK_RETRY_FIRST_SECONDS=10,
        WEBHOOK_RETRY_MAX_SECONDS=40,
        WEBHOOK_GIVE_UP_SECONDS=100,
    ):
        assert [retry_delay(attempt=n) for n in range(1, 6)] == [10, 20, 40, 40, 40]
        delivery = webhook_endpoint_test(endpoint=endpoint.endpoint)
        (claimed,) = webhook_deliveries_claim(limit=5).deliveries
        assert (claimed.id, claimed.attempt) == (delivery.pk, 1)
        assert "whsec_" not in repr(claimed)
        # Claimed: not due again while its attempt may run.
        assert webhook_deliveries_claim(limit=5).deliveries == []
        row = webhook_delivery_record(
            delivery_id=delivery.pk, attempt=1, ok=False, status=500, error="HTTP 500"
        )
        assert row is not None
        assert row.status == WebhookDelivery.Status.PENDING
        wait = (row.next_attempt_at - timezone.now()).total_seconds()
        assert 8 < wait <= 10
        # A stale outcome (of an attempt claimed before) changes nothing.
        assert (
            webhook_delivery_record(
                delivery_id=delivery.pk, attempt=0, ok=True, status=200, error=""
            )
            is None
        )
        # Past the give-up time, a failure is final.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            created_at=timezone.now() - timedelta(seconds=95), attempts=4
        )
        row = webhook_delivery_record(
            delivery_id=delivery.pk, attempt=4, ok=False, status=None, error="refused"
        )
        assert row is not None
        assert row.status == WebhookDelivery.Status.FAILED


def test_a_success_is_delivered(endpoint: IssuedEndpoint) -> None:
    delivery = webhook_endpoint_test(endpoint=endpoint.endpoint)
    (claimed,) = webhook_deliveries_claim(limit=5).deliveries
    row = webhook_delivery_record(
        delivery_id=claimed.id, attempt=claimed.attempt, ok=True, status=204, error=""
    )
    assert row is not None
    assert (row.pk, row.status, row.response_status) == (delivery.pk, "delivered", 204)
    assert row.delivered_at is not None


def test_a_new_test_event_replaces_a_waiting_one_and_inactive_endpoints_get_none(
    endpoint: IssuedEndpoint,
) -> None:
    first = webhook_endpoint_test(endpoint=endpoint.endpoint)
    second = webhook_endpoint_test(endpoint=endpoint.endpoint)
    first.refresh_from_db()
    assert first.status == WebhookDelivery.Status.FAILED
    assert second.event_type == TEST_EVENT
    webhook_endpoint_update(endpoint=endpoint.endpoint, active=False)
    second.refresh_from_db()
    assert (second.status, second.last_error) == ("failed", "endpoint deactivated")
    with pytest.raises(ConflictError):
        webhook_endpoint_test(endpoint=endpoint.endpoint)


def test_the_body_and_its_signature(endpoint: IssuedEndpoint) -> None:
    delivery = webhook_endpoint_test(endpoint=endpoint.endpoint)
    body = delivery_body(delivery)
    now = time.time()
    headers = headers_signed(
        event_id=str(delivery.event_id), secret=endpoint.secret, body=body, now=now
    )
    timestamp = headers["OnAir-Webhook-Timestamp"]
    assert headers["OnAir-Webhook-Signature"] == signature(
        secret=endpoint.secret, timestamp=int(timestamp), body=body
    )
    check = dict(timestamp=timestamp, body=body, header=headers["OnAir-Webhook-Signature"])
    assert signature_verify(secret=endpoint.secret, tolerance=300, now=now, **check)
    assert not signature_verify(secret="whsec_other", tolerance=300, now=now, **check)
    assert not signature_verify(secret=endpoint.secret, tolerance=300, now=now + 301, **check)
    tampered = {**check, "body": body.replace(b"webhook.test", b"stream.live")}
    assert not signature_verify(secret=endpoint.secret, tolerance=300, now=now, **tampered)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "http"),
        ("http:///path", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("http://127.0.0.1:8000/", "not a public address"),
        ("http://localhost/", "not a public address"),
        ("http://10.1.2.3/", "not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "not a public address"),
        ("http://[::1]/", "not a public address"),
        ("http://[::ffff:127.0.0.1]/", "not a public address"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://0.0.0.0/", "not a public address"),
    ],
)
def test_destinations_refused(url: str, reason: str, user: User) -> None:
    with pytest.raises(DestinationRefused, match=reason):
        destination_check(url, allow_private=False)
    with pytest.raises(InvalidInputError, match=reason):
        webhook_endpoint_create(owner=user, url=url, events=[Event.STREAM_LIVE])


def test_a_delivery_is_refused_at_its_attempt_when_its_host_is_not_public() -> None:
    """Checked at each attempt, not only when saved: nothing is sent to the address."""
    outcome = post("http://127.0.0.1:9/", body=b"{}", headers={}, timeout=2, allow_private=False)
    assert not outcome.ok
    assert outcome.status is None
    assert outcome.error.startswith("refused:")


def test_endpoints_per_account_are_capped(user: User, fast_webhooks: None) -> None:
    with onair(WEBHOOK_ALLOW_PRIVATE=True, WEBHOOK_MAX_ENDPOINTS_PER_USER=2):
        for n in range(2):
            webhook_endpoint_create(
                owner=user, url=f"http://127.0.0.1:9/{n}", events=["stream.live"]
            )
        with pytest.raises(PermissionDeniedError) as refused:
            webhook_endpoint_create(owner=user, url="http://127.0.0.1:9/3", events=["stream.live"])
    assert refused.value.code == "webhook_quota"


def test_unknown_or_no_events_are_refused(user: User, fast_webhooks: None) -> None:
    for events in ([], ["stream.exploded"]):
        with pytest.raises(InvalidInputError):
            webhook_endpoint_create(owner=user, url="http://127.0.0.1:9/", events=events)


def test_finished_deliveries_expire(endpoint: IssuedEndpoint) -> None:
    old = webhook_endpoint_test(endpoint=endpoint.endpoint)
    waiting = webhook_endpoint_test(endpoint=endpoint.endpoint)  # old is given up now
    long_ago = timezone.now() - timedelta(days=31)
    WebhookDelivery.objects.update(created_at=long_ago)
    assert webhook_deliveries_expire() == 1
    assert [row.pk for row in deliveries()] == [waiting.pk]  # still pending: kept
    with onair(WEBHOOK_RETENTION_DAYS=0):
        assert webhook_deliveries_expire() == 0
    assert not WebhookDelivery.objects.filter(pk=old.pk).exists()


def test_a_webhook_secret_that_reaches_a_log_record_is_redacted(endpoint: IssuedEndpoint) -> None:
    assert endpoint.secret not in redact(f"oops: {endpoint.secret}")
    assert endpoint.secret not in repr(endpoint.endpoint)
    assert endpoint.secret not in str(endpoint.endpoint)


@pytest.mark.django_db(transaction=True)
def test_a_delivery_another_process_is_claiming_is_skipped_not_waited_for(
    endpoint: IssuedEndpoint,
) -> None:
    """PostgreSQL: while one process's claim holds a row locked, another's claim passes it
    by (SKIP LOCKED) and takes the next; SQLite serves from one process."""
    if connection.vendor != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite serves from one process")
    first = webhook_endpoint_test(endpoint=endpoint.endpoint)
    second = webhook_endpoint_create(
        owner=endpoint.endpoint.owner, url="http://127.0.0.1:9/2", events=["stream.live"]
    )
    other = webhook_endpoint_test(endpoint=second.endpoint)
    locked = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with transaction.atomic():
            WebhookDelivery.objects.select_for_update().get(pk=first.pk)
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        claimed = webhook_deliveries_claim(limit=5).deliveries
    finally:
        release.set()
        holder.join()
    assert [item.id for item in claimed] == [other.pk]
    assert [item.id for item in webhook_deliveries_claim(limit=5).deliveries] == [first.pk]


@pytest.mark.django_db(transaction=True)
async def test_the_servers_hourly_task_expires_the_delivery_log(endpoint: IssuedEndpoint) -> None:
    old = await database_sync_to_async(webhook_endpoint_test)(endpoint=endpoint.endpoint)
    await database_sync_to_async(WebhookDelivery.objects.filter(pk=old.pk).update)(
        status=WebhookDelivery.Status.DELIVERED, created_at=timezone.now() - timedelta(days=31)
    )
    gone = database_sync_to_async(lambda: not WebhookDelivery.objects.filter(pk=old.pk).exists())
    task = asyncio.ensure_future(expire_periodically(every=0.05))
    try:
        for _ in range(100):
            if await gone():
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await gone()


def test_retry_now_sends_failed_deliveries_again(endpoint: IssuedEndpoint) -> None:
    delivery = webhook_endpoint_test(endpoint=endpoint.endpoint)
    webhook_endpoint_test(endpoint=endpoint.endpoint)  # gives up the first
    delivered = webhook_endpoint_test(endpoint=endpoint.endpoint)
    WebhookDelivery.objects.filter(pk=delivered.pk).update(status=WebhookDelivery.Status.DELIVERED)
    now = timezone.now()
    assert webhook_deliveries_retry(deliveries=WebhookDelivery.objects.all(), now=now) == 2
    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at) == ("pending", now)
    delivered.refresh_from_db()
    assert delivered.status == "delivered"
