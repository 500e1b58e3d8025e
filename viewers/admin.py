from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from viewers.models import ViewerSession


@admin.register(ViewerSession)
class ViewerSessionAdmin(admin.ModelAdmin):
    """Read-only history: sessions are written by the signaling layer, not by hand."""

    list_display = ["stream", "kind", "user", "started_at", "ended_at"]
    list_filter = ["kind", ("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["stream__title", "stream__slug", "user__username"]
    list_select_related = ["stream", "user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
