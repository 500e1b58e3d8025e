"""Admin for streams: staff can find, end and re-key any stream. Keys never show in clear
except once, in the message right after staff rotate one.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from broadcast import services
from broadcast.models import Stream, StreamKey
from onair.exceptions import ApplicationError


class StreamKeyInline(admin.TabularInline):
    # Each row is titled with the key itself (``StreamKey.__str__``: the masked key), so the
    # masked key is not a column as well.
    model = StreamKey
    fields = ["created_at", "revoked_at"]
    readonly_fields = ["created_at", "revoked_at"]
    extra = 0
    can_delete = False
    ordering = ["-created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
        "pages",
    ]
    list_filter = ["state", "visibility", "record"]
    search_fields = ["title", "slug", "description", "owner__username", "owner__email"]
    list_select_related = ["owner"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "pages",
        "state",
        "viewer_count",
        "peak_viewer_count",
        "created_at",
        "updated_at",
        "started_at",
        "ended_at",
        "end_reason",
        # set by the services as broadcasts go: never edited by hand
        "publisher_key",
        "poster",
        "poster_taken_at",
    ]
    inlines = [StreamKeyInline]
    actions = ["end_broadcast", "rotate_key"]

    def get_readonly_fields(self, request: HttpRequest, obj: Stream | None = None) -> list[str]:
        # The address and the owner are chosen once, at creation; a new stream has no pages.
        if obj is None:
            return [field for field in self.readonly_fields if field != "pages"]
        return ["slug", "owner", *self.readonly_fields]

    @admin.display(description="pages")
    def pages(self, stream: Stream) -> str:
        """Links to the stream's watch page and studio (the site's, outside the admin)."""
        return format_html(
            '<a href="{}">Watch</a> · <a href="{}">Studio</a>',
            reverse("viewers:watch", kwargs={"slug": stream.slug}),
            reverse("broadcast:studio", kwargs={"slug": stream.slug}),
        )

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
