"""Where stream posters are kept: the ``"thumbnails"`` storage alias
(``STORAGES`` in the settings; local disk under ``var/thumbnails`` by default)."""

from __future__ import annotations

from django.core.files.storage import Storage, storages

THUMBNAILS = "thumbnails"


def thumbnail_storage() -> Storage:
    """Looked up at each use, so that a settings change (a test's) takes effect."""
    return storages[THUMBNAILS]
