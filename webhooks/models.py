"""Webhook endpoints (an account's URLs and what they hear) and their deliveries: the outbox
the delivery loop sends from (``webhooks.delivery``) and the delivery log."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from broadcast.models import Stream


class Event(models.TextChoices):
    """What an endpoint may subscribe to (docs/WEBHOOKS.md has each one's body)."""

    STREAM_LIVE = "stream.live", "A broadcast began"
    STREAM_ENDED = "stream.ended", "A broadcast ended"
    STREAM_RECONNECTING = "stream.reconnecting", "The broadcaster's connection dropped"
    RECORDING_READY = "recording.ready", "A recording is ready to watch"
    VIEWER_PEAK = "viewer.peak", "A broadcast reached a new viewer peak"


# Sent by "send test event" to one endpoint, whatever it subscribes to.
TEST_EVENT = "webhook.test"


class WebhookEndpoint(models.Model):
    """A URL of an account that receives the events it subscribes to about the account's
    streams, each signed with its ``secret`` (HMAC-SHA256, docs/WEBHOOKS.md)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # ``Event`` values.
    events = models.JSONField(default=list)
    active = models.BooleanField(default=True, help_text="Inactive: nothing is sent to it.")
    # Signs every delivery; shown to its owner when made (and when rotated), never logged.
    secret = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of {self.owner_id}"

    def __repr__(self) -> str:  # never the secret
        return f"<WebhookEndpoint {self.pk} owner={self.owner_id} active={self.active}>"

    @property
    def masked_secret(self) -> str:
        return f"{self.secret[:10]}…" if self.secret else ""

    def subscribes(self, event: str) -> bool:
        return event in self.events


class WebhookDelivery(models.Model):
    """One event for one endpoint: sent until it is accepted (a 2xx answer) or given up.

    Rows are the truth: a process that claims a row moves its ``next_attempt_at`` past the
    attempt's longest time first, so a process that dies mid-attempt leaves it due again."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    # The event's id (one event sent to several endpoints has one id): the same at each
    # attempt, for receivers to drop a repeat.
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    event_type = models.CharField(max_length=32)
    # The broadcast's stream it is about (kept when the stream goes: the log stays).
    stream = models.ForeignKey(
        Stream, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    payload = models.JSONField(default=dict, help_text="The event's data.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["endpoint", "-created_at"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → webhook {self.endpoint_id} ({self.status})"
