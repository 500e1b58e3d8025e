"""``manage.py recordings_expire``: delete the recordings older than
``ONAIR_RECORDING_RETENTION_DAYS``, with their files (each running server also does it
hourly: ``onair.retention``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from onair.conf import onair_settings
from recordings.services import recordings_expire


class Command(BaseCommand):
    help = "Delete the recordings older than ONAIR_RECORDING_RETENTION_DAYS, with their files."

    def handle(self, *args: Any, **options: Any) -> None:
        days = onair_settings().recording.retention_days
        if not days:
            self.stdout.write("ONAIR_RECORDING_RETENTION_DAYS is 0: recordings are kept.")
            return
        deleted = recordings_expire()
        self.stdout.write(f"Deleted {deleted} recording(s) older than {days:g} days.")
