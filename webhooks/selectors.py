"""Reads of webhook endpoints and their delivery log: an account sees only its own."""

from __future__ import annotations

from django.db.models import QuerySet

from broadcast.selectors import AnyUser
from onair.exceptions import NotFoundError
from webhooks.models import WebhookDelivery, WebhookEndpoint


def webhook_endpoint_list(*, user: AnyUser) -> QuerySet[WebhookEndpoint]:
    """``user``'s endpoints, newest first."""
    if not user.is_authenticated:
        return WebhookEndpoint.objects.none()
    return WebhookEndpoint.objects.filter(owner_id=user.pk)


def webhook_endpoint_get(*, endpoint_id: int, user: AnyUser) -> WebhookEndpoint:
    """One of ``user``'s endpoints; anyone else's is "not found"."""
    endpoint = webhook_endpoint_list(user=user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFoundError("No such webhook endpoint.")
    return endpoint


def webhook_delivery_list(
    *, endpoint: WebhookEndpoint, status: str | None = None, event_type: str | None = None
) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries, newest first."""
    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint)
    if status:
        deliveries = deliveries.filter(status=status)
    if event_type:
        deliveries = deliveries.filter(event_type=event_type)
    return deliveries
