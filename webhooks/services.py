"""Writes of webhook endpoints and of their deliveries (the outbox).

Events are enqueued inside the transaction that made them happen (``webhooks.receivers``):
a broadcast that went live has its ``stream.live`` rows, or neither happened. The delivery
loop (``webhooks.delivery``) claims due rows (``webhook_deliveries_claim``), sends them
and records each attempt (``webhook_delivery_record``).
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Min, QuerySet
from django.utils import timezone

from broadcast.models import Stream
from onair.conf import onair_settings
from onair.exceptions import (
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    TooManyRequestsError,
)
from webhooks.models import TEST_EVENT, Event, WebhookDelivery, WebhookEndpoint
from webhooks.transport import DestinationRefused, destination_check

logger = logging.getLogger("onair.webhooks")

SECRET_PREFIX = "whsec_"
# A claimed delivery is due again this long after its attempt's deadline: the attempt of a
# process that died is tried again soon. One overtaken (a host name whose resolution hung)
# is sent twice: delivery is at least once, and receivers drop repeats by their id.
CLAIM_MARGIN_SECONDS = 5.0
# "Send test event" is for checking a receiver, not for filling the delivery log.
TEST_EVENTS_PER_HOUR = 60

# Called once a transaction that enqueued deliveries commits (the delivery loop of this
# process wakes up then instead of at its next poll).
_enqueued_listeners: list[Callable[[], None]] = []


def enqueued_listen(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` whenever deliveries were enqueued here; returns the undo."""
    _enqueued_listeners.append(listener)
    return lambda: _enqueued_listeners.remove(listener)


def _enqueued() -> None:
    for listener in list(_enqueued_listeners):
        listener()


# --- endpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedEndpoint:
    """An endpoint and its secret, right after it was made or rotated: show it this once."""

    endpoint: WebhookEndpoint
    secret: str


def _secret_new() -> str:
    return f"{SECRET_PREFIX}{secrets.token_urlsafe(32)}"


def webhook_url_check(*, url: str) -> None:
    """``InvalidInputError`` for a URL that deliveries would refuse (``transport``)."""
    try:
        destination_check(url, allow_private=onair_settings().webhooks.allow_private)
    except DestinationRefused as exc:
        raise InvalidInputError(str(exc), fields={"url": [str(exc)]}) from None


def _events_check(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(Event.values))
    if unknown or not events:
        message = f"Unknown events: {', '.join(unknown)}." if unknown else "Subscribe to an event."
        raise InvalidInputError(message, fields={"events": [message]})
    return [event for event in Event.values if event in events]


def webhook_endpoint_quota_check(*, owner: User) -> None:
    """``PermissionDeniedError`` (``webhook_quota``) when ``owner`` has as many endpoints as
    ``WEBHOOK_MAX_ENDPOINTS_PER_USER`` allows."""
    limit = onair_settings().webhooks.max_endpoints_per_user
    if not limit:
        return
    if transaction.get_connection().in_atomic_block:
        # The owner's row lock serializes concurrent creates by one owner (and their count).
        User.objects.select_for_update().filter(pk=owner.pk).first()
    if WebhookEndpoint.objects.filter(owner=owner).count() >= limit:
        raise PermissionDeniedError(
            f"This account has reached its quota of {limit} webhook endpoints; delete one to "
            "add another.",
            code="webhook_quota",
        )


@transaction.atomic
def webhook_endpoint_create(
    *, owner: User, url: str, events: list[str], description: str = "", active: bool = True
) -> IssuedEndpoint:
    """A new endpoint of ``owner`` for ``events``, with its secret (returned only now). At
    most ``WEBHOOK_MAX_ENDPOINTS_PER_USER`` per account (``webhook_quota``)."""
    events = _events_check(events)
    webhook_url_check(url=url)
    webhook_endpoint_quota_check(owner=owner)
    secret = _secret_new()
    endpoint = WebhookEndpoint.objects.create(
        owner=owner,
        url=url,
        events=events,
        description=description,
        active=active,
        secret=secret,
    )
    logger.info("webhook_endpoint_create endpoint=%s owner=%s", endpoint.pk, owner.pk)
    return IssuedEndpoint(endpoint=endpoint, secret=secret)


@transaction.atomic
def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    description: str | None = None,
    active: bool | None = None,
) -> WebhookEndpoint:
    """Change the given fields (``None`` leaves one as it is). Deactivating it gives up
    the deliveries still waiting for it (``failed``, "endpoint deactivated")."""
    if url is not None:
        webhook_url_check(url=url)
        endpoint.url = url
    if events is not None:
        endpoint.events = _events_check(events)
    if description is not None:
        endpoint.description = description
    if active is not None:
        endpoint.active = active
    endpoint.save()
    if not endpoint.active:
        _pending_give_up(endpoint=endpoint, reason="endpoint deactivated")
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint with its delivery log."""
    endpoint.delete()


def webhook_endpoint_secret_rotate(*, endpoint: WebhookEndpoint) -> IssuedEndpoint:
    """A new secret for the endpoint (the old one signs nothing more, from now on)."""
    secret = _secret_new()
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "updated_at"])
    logger.info("webhook_endpoint_secret_rotate endpoint=%s", endpoint.pk)
    return IssuedEndpoint(endpoint=endpoint, secret=secret)


@transaction.atomic
def webhook_endpoint_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send the endpoint a ``webhook.test`` event, whatever it subscribes to. A test still
    waiting is given up for it (one test at a time per endpoint)."""
    if not endpoint.active:
        raise ConflictError(
            "This endpoint is inactive: activate it to send it a test event.",
            code="endpoint_inactive",
        )
    now = timezone.now()
    tests = WebhookDelivery.objects.filter(endpoint=endpoint, event_type=TEST_EVENT)
    if tests.filter(created_at__gte=now - timedelta(hours=1)).count() >= TEST_EVENTS_PER_HOUR:
        raise TooManyRequestsError(
            f"At most {TEST_EVENTS_PER_HOUR} test events an hour per endpoint.",
            code="too_many_tests",
            retry_after=600,
        )
    _pending_give_up(endpoint=endpoint, reason="replaced by a newer test", tests_only=True)
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_type=TEST_EVENT,
        payload={"endpoint": {"id": endpoint.pk, "url": endpoint.url}},
        next_attempt_at=now,
        created_at=now,
    )
    transaction.on_commit(_enqueued)
    return delivery


def _pending_give_up(*, endpoint: WebhookEndpoint, reason: str, tests_only: bool = False) -> int:
    pending = WebhookDelivery.objects.filter(
        endpoint=endpoint, status=WebhookDelivery.Status.PENDING
    )
    if tests_only:
        pending = pending.filter(event_type=TEST_EVENT)
    return pending.update(status=WebhookDelivery.Status.FAILED, last_error=reason)


# --- events ----------------------------------------------------------------------------------


def _subscribed(*, owner_id: int, event: str) -> list[WebhookEndpoint]:
    # An account has a handful of endpoints at most: filtered here, as SQLite's JSON fields
    # have no "contains".
    endpoints = WebhookEndpoint.objects.filter(owner_id=owner_id, active=True)
    return [endpoint for endpoint in endpoints if endpoint.subscribes(event)]


def webhook_event_enqueue(
    *,
    owner_id: int,
    event: Event,
    payload: dict[str, Any],
    stream: Stream | None = None,
    delay_seconds: float = 0.0,
) -> int:
    """One delivery of ``event`` to each of the account's active endpoints subscribed to
    it, in the caller's transaction (if any); how many."""
    endpoints = _subscribed(owner_id=owner_id, event=event)
    if not endpoints:
        return 0
    now = timezone.now()
    event_id = uuid.uuid4()
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint,
            event_id=event_id,
            event_type=event,
            stream=stream,
            payload=payload,
            next_attempt_at=now + timedelta(seconds=delay_seconds),
            created_at=now,
        )
        for endpoint in endpoints
    )
    transaction.on_commit(_enqueued)
    return len(endpoints)


def webhook_peak_enqueue(*, stream: Stream, payload: dict[str, Any]) -> int:
    """``viewer.peak`` for the stream's new peak: the peak is put into a delivery not tried
    yet, where there is one (one per ``WEBHOOK_PEAK_SECONDS`` window), else a new one is
    due at the window's end. Call with the stream locked (``viewers.services.viewer_join``).
    """
    endpoints = _subscribed(owner_id=stream.owner_id, event=Event.VIEWER_PEAK)
    if not endpoints:
        return 0
    waiting = WebhookDelivery.objects.filter(
        stream=stream,
        event_type=Event.VIEWER_PEAK,
        status=WebhookDelivery.Status.PENDING,
        attempts=0,
        endpoint__in=endpoints,
    )
    covered = set(waiting.values_list("endpoint_id", flat=True))
    waiting.update(payload=payload)
    now = timezone.now()
    due = now + timedelta(seconds=onair_settings().webhooks.peak_seconds)
    event_id = uuid.uuid4()
    created = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint,
            event_id=event_id,
            event_type=Event.VIEWER_PEAK,
            stream=stream,
            payload=payload,
            next_attempt_at=due,
            created_at=now,
        )
        for endpoint in endpoints
        if endpoint.pk not in covered
    )
    if created:
        transaction.on_commit(_enqueued)
    return len(created)


# --- deliveries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """What one attempt sends: taken from the rows when claimed."""

    id: int
    attempt: int
    endpoint_id: int
    event_id: str
    event_type: str
    url: str
    secret: str
    body: bytes

    def __repr__(self) -> str:  # never the secret
        return f"<ClaimedDelivery {self.id} {self.event_type} attempt={self.attempt}>"


def delivery_body(delivery: WebhookDelivery) -> bytes:
    """The JSON a delivery sends (the same at each attempt)."""
    return json.dumps(
        {
            "id": str(delivery.event_id),
            "type": delivery.event_type,
            "created_at": delivery.created_at.isoformat().replace("+00:00", "Z"),
            "data": delivery.payload,
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class Claimed:
    """The deliveries claimed, and when the next one not claimed is due (if any)."""

    deliveries: list[ClaimedDelivery]
    next_due: datetime | None


def _due() -> Any:
    return WebhookDelivery.objects.filter(
        status=WebhookDelivery.Status.PENDING, endpoint__active=True
    )


@transaction.atomic
def webhook_deliveries_claim(*, limit: int) -> Claimed:
    """Up to ``limit`` deliveries due now, each counted as one attempt more and not due
    again until its attempt has had its time (``CLAIM_MARGIN_SECONDS`` past the timeout).
    Rows another process holds locked are skipped (PostgreSQL; SQLite serves from one
    process)."""
    now = timezone.now()
    conf = onair_settings().webhooks
    rows = list(
        _due()
        .filter(next_attempt_at__lte=now)
        .select_related("endpoint")
        .select_for_update(skip_locked=True, of=("self",))
        .order_by("next_attempt_at", "id")[:limit]
    )
    lease = now + timedelta(seconds=conf.timeout_seconds + CLAIM_MARGIN_SECONDS)
    claimed = []
    for row in rows:
        row.attempts += 1
        row.last_attempt_at = now
        row.next_attempt_at = lease
        row.save(update_fields=["attempts", "last_attempt_at", "next_attempt_at"])
        claimed.append(
            ClaimedDelivery(
                id=row.pk,
                attempt=row.attempts,
                endpoint_id=row.endpoint_id,
                event_id=str(row.event_id),
                event_type=row.event_type,
                url=row.endpoint.url,
                secret=row.endpoint.secret,
                body=delivery_body(row),
            )
        )
    next_due = _due().aggregate(first=Min("next_attempt_at"))["first"]
    return Claimed(claimed, next_due)


def retry_delay(*, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, …): doubling from
    ``WEBHOOK_RETRY_FIRST_SECONDS``, at most ``WEBHOOK_RETRY_MAX_SECONDS``."""
    conf = onair_settings().webhooks
    return float(min(conf.retry_first_seconds * 2 ** min(attempt - 1, 60), conf.retry_max_seconds))


@transaction.atomic
def webhook_delivery_record(
    *, delivery_id: int, attempt: int, ok: bool, status: int | None, error: str
) -> WebhookDelivery | None:
    """The outcome of attempt ``attempt`` of a delivery: ``delivered``; or due again after
    ``retry_delay``, or ``failed`` if that would pass ``WEBHOOK_GIVE_UP_SECONDS`` since its
    event. ``None`` when the row moved on meanwhile (deleted, given up, claimed again)."""
    delivery = (
        WebhookDelivery.objects.select_for_update()
        .filter(pk=delivery_id, attempts=attempt, status=WebhookDelivery.Status.PENDING)
        .first()
    )
    if delivery is None:
        return None
    now = timezone.now()
    delivery.response_status = status
    delivery.last_error = error[:500]
    if ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.last_error = ""
    else:
        retry_at = now + timedelta(seconds=retry_delay(attempt=attempt))
        give_up_at = delivery.created_at + timedelta(
            seconds=onair_settings().webhooks.give_up_seconds
        )
        if retry_at > give_up_at:
            delivery.status = WebhookDelivery.Status.FAILED
        else:
            delivery.next_attempt_at = retry_at
    delivery.save()
    logger.info(
        "webhook_delivery delivery=%s endpoint=%s event=%s attempt=%d status=%s result=%s%s",
        delivery.pk,
        delivery.endpoint_id,
        delivery.event_type,
        attempt,
        status if status is not None else "-",
        delivery.status,
        f" error={error[:200]!r}" if error else "",
    )
    return delivery


def webhook_deliveries_retry(*, deliveries: QuerySet[WebhookDelivery], now: datetime) -> int:
    """Send the given deliveries that were not delivered again now (one failed already given
    up gets one more attempt); how many."""
    retried = deliveries.exclude(status=WebhookDelivery.Status.DELIVERED).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=now
    )
    if retried:
        transaction.on_commit(_enqueued)
    return retried


def webhook_deliveries_expire(*, now: datetime | None = None) -> int:
    """Delete the finished deliveries older than ``WEBHOOK_RETENTION_DAYS`` (none when it is
    0); how many."""
    days = onair_settings().webhooks.retention_days
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted, _ = (
        WebhookDelivery.objects.exclude(status=WebhookDelivery.Status.PENDING)
        .filter(created_at__lt=cutoff)
        .delete()
    )
    if deleted:
        logger.info("webhook_deliveries_expire deleted=%d older_than_days=%s", deleted, days)
    return deleted
