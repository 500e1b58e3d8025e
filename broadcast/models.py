"""Streams and the keys broadcasters publish with."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from onair.conf import onair_settings


def record_by_default() -> bool:
    """A new stream's ``record``: ``ONAIR_RECORD_BY_DEFAULT``."""
    return onair_settings().recording.record_by_default


class Stream(models.Model):
    """A broadcaster's channel: one live broadcast at a time (idle → live → ended)."""

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public"
        UNLISTED = "unlisted", "Unlisted"
        PRIVATE = "private", "Private"

    class State(models.TextChoices):
        IDLE = "idle", "Idle"
        LIVE = "live", "Live"
        ENDED = "ended", "Ended"

    class EndReason(models.TextChoices):
        """Who or what ended the last broadcast (blank while none has ended)."""

        STUDIO = "studio", "Ended in the studio"
        OWNER = "owner", "Ended from My streams"
        API = "api", "Ended through the API"
        ADMIN = "admin", "Ended by an administrator"
        PUBLISHER = "publisher", "Ended by the encoder (WHIP)"
        PUBLISHER_LOST = "publisher_lost", "Ended: the broadcaster's connection was lost"
        KEY_REVOKED = "key_revoked", "Ended: the stream key was revoked"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="streams"
    )
    title = models.CharField(max_length=140)
    description = models.TextField(blank=True, max_length=5000)
    slug = models.SlugField(max_length=64, unique=True)
    visibility = models.CharField(
        max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.IDLE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)
    viewer_count = models.PositiveIntegerField(default=0)
    peak_viewer_count = models.PositiveIntegerField(default=0)
    record = models.BooleanField(
        default=record_by_default, help_text="Record its broadcasts on the server."
    )
    # The key the current broadcast's publisher was let in with; null when the owner's
    # login did (or nobody publishes). Revoking that key ends the broadcast.
    publisher_key = models.ForeignKey(
        "StreamKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The latest poster: a JPEG of the live video (broadcast.posters), its name in the
    # "thumbnails" storage, and when it was taken (also its version in the poster's URL).
    poster = models.CharField(max_length=255, blank=True)
    poster_taken_at = models.DateTimeField(null=True, blank=True)
    # What the live broadcast's publisher says it sends (the studio's Mute mic and Turn camera
    # off): viewers show it over the video. Each publish sets them afresh (a WHIP client:
    # both false).
    mic_muted = models.BooleanField(default=False)
    camera_off = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "visibility"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(peak_viewer_count__gte=models.F("viewer_count")),
                name="stream_peak_at_least_current",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_live(self) -> bool:
        return self.state == self.State.LIVE

    @property
    def poster_url(self) -> str:
        """The versioned address of the poster taken during the broadcast on air now; ""
        when there is none (not live, or none taken yet: a poster of an earlier broadcast
        is not shown as this one's)."""
        taken = self.poster_taken_at
        if not (self.poster and self.is_live and taken and self.started_at):
            return ""
        if taken < self.started_at:
            return ""
        return f"{reverse('broadcast:stream-poster', args=[self.slug])}?v={self.poster_version}"

    @property
    def poster_version(self) -> str:
        """Changes with every new poster: its URL's cache-busting ``v``, and its ETag."""
        taken = self.poster_taken_at
        return str(int(taken.timestamp() * 1000)) if taken is not None else ""


class StreamKey(models.Model):
    """A secret that lets its holder publish to a stream (OBS, WHIP, the studio).

    Only a SHA-256 digest of the secret is stored, plus a short prefix so people can
    tell keys apart. At most one key per stream is active (not revoked).
    """

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="keys")
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["stream"],
                condition=Q(revoked_at__isnull=True),
                name="stream_key_one_active_per_stream",
            ),
        ]

    def __str__(self) -> str:
        return self.masked

    @staticmethod
    def digest_of(secret: str) -> str:
        """SHA-256 is enough: secrets are random 256-bit tokens, not passwords."""
        return hashlib.sha256(secret.encode()).hexdigest()

    @property
    def masked(self) -> str:
        return f"{self.prefix}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
