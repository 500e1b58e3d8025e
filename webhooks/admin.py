"""Admin for webhooks: each account's endpoints (add, change, deactivate, "Send test
event") and the delivery log (filter by status and event, "Retry now")."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from onair.exceptions import ApplicationError
from webhooks import services
from webhooks.models import Event, WebhookDelivery, WebhookEndpoint


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(choices=Event.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["owner", "url", "description", "events", "active"]

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"]
        try:
            services.webhook_url_check(url=url)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None
        return url

    def clean_owner(self) -> Any:
        owner = self.cleaned_data["owner"]
        if self.instance.pk is None:
            try:
                services.webhook_endpoint_quota_check(owner=owner)
            except ApplicationError as exc:
                raise forms.ValidationError(exc.message) from None
        return owner


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["id", "url", "owner", "shown_events", "active", "created_at", "log"]
    list_filter = ["active"]
    search_fields = ["url", "description", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["masked_secret", "created_at", "updated_at", "log"]
    actions = ["send_test_event"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The owner is chosen once; a new endpoint has no secret nor log yet.
        if obj is None:
            return []
        return ["owner", *self.readonly_fields]

    @admin.display(description="events")
    def shown_events(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.events)

    @admin.display(description="deliveries")
    def log(self, endpoint: WebhookEndpoint) -> str:
        url = reverse("admin:webhooks_webhookdelivery_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">log</a>', url, endpoint.pk)

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        if change:
            services.webhook_endpoint_update(
                endpoint=obj,
                url=data["url"],
                events=list(data["events"]),
                description=data["description"],
                active=data["active"],
            )
            return
        issued = services.webhook_endpoint_create(
            owner=data["owner"],
            url=data["url"],
            events=list(data["events"]),
            description=data["description"],
            active=data["active"],
        )
        obj.pk = issued.endpoint.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            f"The signing secret of webhook {obj.pk}, shown only this once: {issued.secret}",
            messages.WARNING,
        )

    @admin.action(description="Send test event", permissions=["change"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        sent, refused = 0, []
        for endpoint in queryset:
            try:
                services.webhook_endpoint_test(endpoint=endpoint)
            except ApplicationError as exc:
                refused.append(f"{endpoint.pk}: {exc.message}")
            else:
                sent += 1
        if sent:
            self.message_user(
                request,
                f"Queued a test event for {sent} endpoint(s); see the delivery log.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(request, "Not sent: " + "; ".join(refused), messages.WARNING)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "event_type",
        "endpoint_link",
        "status",
        "attempts",
        "response_status",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", "event_type", ("endpoint", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["endpoint__url", "endpoint__owner__username", "event_id"]
    list_select_related = ["endpoint"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "endpoint_link",
        "event_id",
        "event_type",
        "stream",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "response_status",
        "last_error",
        "delivered_at",
        "created_at",
    )
    fields = readonly_fields  # a log: read, retried or deleted, never edited
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # deliveries come from events only

    @admin.display(description="endpoint", ordering="endpoint")
    def endpoint_link(self, delivery: WebhookDelivery) -> str:
        url = reverse("admin:webhooks_webhookendpoint_change", args=[delivery.endpoint_id])
        return format_html('<a href="{}">{}</a>', url, delivery.endpoint.url)

    @admin.action(description="Retry now (failed or waiting)", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        retried = services.webhook_deliveries_retry(deliveries=queryset, now=timezone.now())
        self.message_user(request, f"{retried} delivery(ies) will be sent again.", messages.SUCCESS)
