"""API shapes of recordings. No business logic."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from recordings.models import Recording


class RecordingSerializer(serializers.ModelSerializer[Recording]):
    """A recording as whoever may see it sees it (where it is written never shows)."""

    stream = serializers.CharField(source="stream.slug", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Recording
        fields = [
            "id",
            "stream",
            "state",
            "published",
            "started_at",
            "ended_at",
            "duration",
            "size",
            "container",
            "video_codec",
            "audio_codec",
            "width",
            "height",
            "video_frames",
            "stop_reason",
            "detail",
            "download_url",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_download_url(self, recording: Recording) -> str | None:
        if not recording.is_ready:
            return None
        return reverse("recordings-api:recording-download", kwargs={"recording_id": recording.pk})
