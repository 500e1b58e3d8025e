"""Admin for recordings: find them by state, stream and date; publish or unpublish; delete
them with their files (every delete does: ``recordings.receivers``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from recordings.models import Recording
from recordings.services import recording_set_published

# what a recording's page in the admin shows
SHOWN: tuple[str, ...] = (
    "stream_link",
    "state",
    "published",
    "started_at",
    "ended_at",
    "shown_duration",
    "shown_size",
    "container",
    "video_codec",
    "audio_codec",
    "resolution",
    "video_frames",
    "stop_reason",
    "detail",
    "download_link",
    "file",
    "spool_path",
    "host",
    "worker",
)


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = [
        "started_at",
        "stream_link",
        "state",
        "shown_duration",
        "shown_size",
        "container",
        "resolution",
        "stop_reason",
        "published",
        "download_link",
    ]
    list_filter = [
        "state",
        ("stream", admin.RelatedOnlyFieldListFilter),
        "started_at",
        "stop_reason",
        "published",
    ]
    search_fields = ["stream__title", "stream__slug", "stream__owner__username"]
    list_select_related = ["stream"]
    date_hierarchy = "started_at"
    fields = SHOWN
    readonly_fields = tuple(name for name in SHOWN if name != "published")  # the one to edit
    actions = ["delete_with_files", "publish", "unpublish"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # recordings come from broadcasts only

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # ``delete_with_files`` says what it does
        return actions

    @admin.display(description="stream", ordering="stream__title")
    def stream_link(self, recording: Recording) -> str:
        url = reverse("admin:broadcast_stream_change", args=[recording.stream_id])
        return format_html('<a href="{}">{}</a>', url, recording.stream)

    @admin.display(description="duration", ordering="duration")
    def shown_duration(self, recording: Recording) -> str:
        minutes, seconds = divmod(round(recording.duration), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}"

    @admin.display(description="size", ordering="size")
    def shown_size(self, recording: Recording) -> str:
        return filesizeformat(recording.size)

    @admin.display(description="resolution")
    def resolution(self, recording: Recording) -> str:
        return f"{recording.width}x{recording.height}" if recording.width else "—"

    @admin.display(description="file")
    def download_link(self, recording: Recording) -> str:
        if not recording.is_ready:
            return "—"
        url = reverse("recordings-api:recording-download", kwargs={"recording_id": recording.pk})
        return format_html(
            '<a href="{}">replay</a> · <a href="{}">download</a>',
            recording.get_absolute_url(),
            url,
        )

    @admin.action(
        description="Delete the selected recordings and their files", permissions=["delete"]
    )
    def delete_with_files(self, request: HttpRequest, queryset: QuerySet[Recording]) -> None:
        deleted, _ = queryset.delete()  # each row's files go with it (recordings.receivers)
        self.message_user(
            request, f"Deleted {deleted} recording(s) and their files.", messages.SUCCESS
        )

    @admin.action(
        description="Publish (anyone may watch while the stream is public)",
        permissions=["change"],
    )
    def publish(self, request: HttpRequest, queryset: QuerySet[Recording]) -> None:
        self._publish(request, queryset, published=True)

    @admin.action(description="Unpublish (owner and staff only)", permissions=["change"])
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Recording]) -> None:
        self._publish(request, queryset, published=False)

    def _publish(
        self, request: HttpRequest, queryset: QuerySet[Recording], *, published: bool
    ) -> None:
        for recording in queryset.select_related("stream"):
            recording_set_published(recording=recording, user=request.user, published=published)
        done = "Published" if published else "Unpublished"
        self.message_user(request, f"{done} {queryset.count()} recording(s).", messages.SUCCESS)
