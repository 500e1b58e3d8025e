"""A recording's files go with its row, however it is deleted (the API, the admin's action
or its delete page, retention, its stream deleted with everything it holds)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from recordings.models import Recording
from recordings.storage import recording_storage

logger = logging.getLogger("onair.recordings")


@receiver(post_delete, sender=Recording, dispatch_uid="recordings-delete-files")
def _delete_files(sender: type[Recording], instance: Recording, **kwargs: Any) -> None:
    names = [name for name in (instance.file.name, instance.thumbnail.name) if name]
    spool = instance.spool_path if instance.state == Recording.State.RECORDING else ""
    # Once the row is really gone: a rolled-back delete keeps its files.
    transaction.on_commit(lambda: _remove(names, spool))


def _remove(names: list[str], spool: str) -> None:
    storage = recording_storage()
    for name in names:
        try:
            storage.delete(name)
        except OSError as exc:  # a remote backend that failed: the row is gone anyway
            logger.warning("could not delete recording file %s: %s", name, exc)
    if spool:
        Path(spool).unlink(missing_ok=True)
