"""Admin for streams: staff can find, end and re-key any stream. Keys never show in clear
except once, in the message right after staff rotate one.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from broadcast import services
from broadcast.models import Stream, StreamKey
from onair.exceptions import ApplicationError


class StreamKeyInline(admin.TabularInline):
    model = StreamKey
    fields = ["masked", "created_at", "revoked_at"]
    readonly_fields = ["masked", "created_at", "revoked_at"]
    extra = 0
    can_delete = False
    ordering = ["-created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="key")
    def masked(self, key: StreamKey) -> str:
        return key.masked


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "owner",
        "state",
        "visibility",
        "record",
        "viewer_count",
        "peak_viewer_count",
        "started_at",
    ]
    list_filter = ["state", "visibility", "record"]
    search_fields = ["title", "slug", "description", "owner__username", "owner__email"]
    list_select_related = ["owner"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "state",
        "viewer_count",
        "peak_viewer_count",
        "created_at",
        "updated_at",
        "started_at",
        "ended_at",
        "end_reason",
    ]
    inlines = [StreamKeyInline]
    actions = ["end_broadcast", "rotate_key"]

    def get_readonly_fields(self, request: HttpRequest, obj: Stream | None = None) -> list[str]:
        # The address and the owner are chosen once, at creation.
        fixed = ["slug", "owner"] if obj is not None else []
        return [*fixed, *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: Stream, form: ModelForm, change: bool) -> None:
        if change:
            services.stream_update(
                stream=obj,
                title=obj.title,
                description=obj.description,
                visibility=obj.visibility,
                record=obj.record,
            )
            return
        stream, issued = services.stream_create(
            owner=obj.owner,
            title=obj.title,
            description=obj.description,
            visibility=obj.visibility,
            slug=obj.slug or None,
            record=obj.record,
        )
        obj.pk = stream.pk
        obj.refresh_from_db()
        self._show_secret(request, stream=stream, secret=issued.secret)

    @admin.action(description="End broadcast", permissions=["change"])
    def end_broadcast(self, request: HttpRequest, queryset: QuerySet[Stream]) -> None:
        ended, refused = 0, []
        for stream in queryset:
            try:
                services.stream_end(stream=stream, reason=Stream.EndReason.ADMIN)
            except ApplicationError:
                refused.append(stream.title)
            else:
                ended += 1
        if ended:
            self.message_user(request, f"Ended {ended} broadcast(s).", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Not live, left as they were: {', '.join(refused)}.", messages.WARNING
            )

    @admin.action(description="Rotate key", permissions=["change"])
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Stream]) -> None:
        for stream in queryset:
            issued = services.stream_key_rotate(stream=stream)
            self._show_secret(request, stream=stream, secret=issued.secret)

    def _show_secret(self, request: HttpRequest, *, stream: Stream, secret: str) -> None:
        self.message_user(
            request,
            f"New key for “{stream.title}” ({stream.slug}), shown only this once: {secret}",
            messages.WARNING,
        )
