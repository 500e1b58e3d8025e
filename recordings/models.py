"""Recordings of broadcasts: one file per recording, kept in the recordings' storage."""

from __future__ import annotations

import uuid

from django.db import models
from django.urls import reverse

from broadcast.models import Stream
from recordings.storage import recording_storage


class Recording(models.Model):
    """One recorded broadcast (or the part of it recorded between a start and a stop).

    ``recording`` while the SFU writes it into its spool directory (``spool_path``, on
    ``host``, by cluster ``worker``); then ``ready`` with its file in the recordings'
    storage, or ``failed`` with a reason when nothing playable was left.
    """

    class State(models.TextChoices):
        RECORDING = "recording", "Recording"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class StopReason(models.TextChoices):
        """Why the recording stopped (blank while it runs)."""

        ENDED = "ended", "The broadcast ended"
        STOPPED = "stopped", "Recording was turned off"
        SIZE_LIMIT = "size_limit", "It reached the size limit"
        DURATION_LIMIT = "duration_limit", "It reached the duration limit"
        DISK_FULL = "disk_full", "The server's disk was nearly full"
        INTERRUPTED = "interrupted", "The server recording it stopped abruptly"
        FAILED = "failed", "Recording failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="recordings")
    state = models.CharField(max_length=16, choices=State.choices, default=State.RECORDING)
    published = models.BooleanField(
        default=False, help_text="Anyone may watch it while its stream is public."
    )
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(default=0.0, help_text="Seconds.")
    size = models.BigIntegerField(default=0, help_text="Bytes.")
    container = models.CharField(max_length=16, blank=True)
    video_codec = models.CharField(max_length=32, blank=True)
    audio_codec = models.CharField(max_length=32, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    video_frames = models.PositiveIntegerField(default=0)
    stop_reason = models.CharField(max_length=16, choices=StopReason.choices, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    file = models.FileField(storage=recording_storage, max_length=255, blank=True)
    thumbnail = models.FileField(storage=recording_storage, max_length=255, blank=True)
    # Where the SFU writes it while it runs (see ``signaling.gateway.recording``).
    spool_path = models.CharField(max_length=1024, blank=True)
    host = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-started_at", "-created_at"]
        indexes = [
            models.Index(fields=["stream", "-started_at"]),
            models.Index(fields=["state"]),
        ]

    def __str__(self) -> str:
        return f"{self.stream} — {self.started_at:%Y-%m-%d %H:%M}"

    def get_absolute_url(self) -> str:
        """Its replay page."""
        return reverse("recordings:replay", kwargs={"recording_id": self.pk})

    @property
    def is_ready(self) -> bool:
        return self.state == self.State.READY
