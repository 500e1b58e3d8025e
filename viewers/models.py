from __future__ import annotations

from django.conf import settings
from django.db import models


class ViewerSession(models.Model):
    """One viewer watching one broadcast, from joining until leaving."""

    class Kind(models.TextChoices):
        WEB = "web", "Watch page"
        WHEP = "whep", "WHEP player"

    stream = models.ForeignKey(
        "broadcast.Stream", on_delete=models.CASCADE, related_name="viewer_sessions"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.WEB)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="viewer_sessions",
    )
    started_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["stream", "ended_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} viewer of {self.stream_id}"

    @property
    def is_active(self) -> bool:
        return self.ended_at is None
