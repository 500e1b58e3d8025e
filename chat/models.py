"""Live chat: the messages of each stream's broadcasts, its moderation and its settings."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from broadcast.models import Stream


class ChatSettings(models.Model):
    """One stream's chat rules, set by its owner (a stream without a row has the defaults)."""

    stream = models.OneToOneField(
        Stream, primary_key=True, on_delete=models.CASCADE, related_name="chat_settings"
    )
    enabled = models.BooleanField(default=True, help_text="Viewers may post.")
    slow_mode_seconds = models.PositiveIntegerField(
        default=0, help_text="Seconds each person waits between two messages; 0: off."
    )
    guests_allowed = models.BooleanField(
        default=False, help_text="Viewers without an account may post under a name of theirs."
    )

    class Meta:
        verbose_name_plural = "chat settings"

    def __str__(self) -> str:
        return f"chat of {self.stream}"


class ChatMessage(models.Model):
    """One message. ``sender`` names who rate limits, slow mode and bans apply to: an
    account (``user:<id>``) or a guest's address, digested (``guest:<hex>``)."""

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="chat_messages")
    # The broadcast it was posted in (its stream's ``started_at`` then); null before any.
    broadcast_started_at = models.DateTimeField(null=True, blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="chat_messages",
    )
    guest_name = models.CharField(max_length=32, blank=True)
    sender = models.CharField(max_length=80)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["stream", "broadcast_started_at", "created_at"]),
            models.Index(fields=["sender", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.author_name}: {self.text[:60]}"

    @property
    def author_name(self) -> str:
        if self.author is not None:
            return self.author.get_username()
        return self.guest_name or "guest"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class ChatRestriction(models.Model):
    """A moderator's ban (no ``expires_at``) or time-out of one sender from one stream's
    chat. Lifting one deletes it."""

    class Kind(models.TextChoices):
        BAN = "ban", "Ban"
        TIMEOUT = "timeout", "Time-out"

    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="chat_restrictions")
    sender = models.CharField(max_length=80)
    # Who it is, for people reading the admin: the account, or the guest's name then.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="chat_restrictions",
    )
    guest_name = models.CharField(max_length=32, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["stream", "sender"])]

    def __str__(self) -> str:
        who = self.user.get_username() if self.user is not None else self.guest_name or "guest"
        return f"{self.get_kind_display()} of {who} on {self.stream}"
