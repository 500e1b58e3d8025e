"""API shapes of webhook endpoints and deliveries. No business logic."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webhooks.models import TEST_EVENT, Event, WebhookDelivery, WebhookEndpoint


class WebhookEndpointSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    """An endpoint as it may always be shown: its secret masked."""

    secret = serializers.CharField(source="masked_secret", read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "description", "events", "active", "secret", "created_at"]
        read_only_fields = fields


class IssuedEndpointSerializer(WebhookEndpointSerializer):
    """An endpoint made or given a new secret: the only time the secret is shown whole.
    Pass the secret as ``context["secret"]``."""

    secret = serializers.SerializerMethodField()  # type: ignore[assignment]

    @extend_schema_field(serializers.CharField())
    def get_secret(self, endpoint: WebhookEndpoint) -> str:
        return str(self.context["secret"])


class WebhookEndpointInputSerializer(serializers.Serializer[object]):
    url = serializers.URLField(
        max_length=2000, help_text="http:// or https://; a public address (docs/WEBHOOKS.md)."
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Event.choices), allow_empty=False, max_length=10
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)


class WebhookDeliverySerializer(serializers.ModelSerializer[WebhookDelivery]):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "last_attempt_at",
            "response_status",
            "last_error",
            "delivered_at",
            "created_at",
        ]
        read_only_fields = fields


class WebhookDeliveryFilterSerializer(serializers.Serializer[object]):
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices, required=False)
    event_type = serializers.ChoiceField(choices=[*Event.values, TEST_EVENT], required=False)
