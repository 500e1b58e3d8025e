"""Where recordings are written and kept.

While a recording runs, the SFU writes it into a local spool directory
(``ONAIR_RECORDING_SPOOL_DIR``); once it is finished it moves, through Django's storage API,
into the storage ``ONAIR_RECORDING_STORAGE`` names (a ``STORAGES`` alias): local disk under
``var/recordings/`` by default, any django-storages backend in production
(docs/RECORDING.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.core.signals import setting_changed
from django.utils.functional import LazyObject, empty

from onair.conf import onair_settings


class _RecordingStorage(LazyObject):
    """The storage ``ONAIR_RECORDING_STORAGE`` names, looked up on first use and again
    after ``STORAGES`` or ``ONAIR`` change (tests), as Django's ``default_storage`` is."""

    _wrapped: Any

    def _setup(self) -> None:
        self._wrapped = storages[onair_settings().recording.storage]


_storage = _RecordingStorage()


def recording_storage() -> Storage:
    """The recordings' storage (``Recording.file``'s, and the services')."""
    return cast(Storage, _storage)


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in {"STORAGES", "ONAIR"}:
        _storage._wrapped = empty


setting_changed.connect(_reset, dispatch_uid="recordings.storage")


def spool_directory() -> Path:
    """The local directory the SFU writes running recordings into (made if missing)."""
    configured = onair_settings().recording.spool_dir
    directory = (
        Path(configured) if configured else Path(settings.BASE_DIR) / "var" / "recording-spool"
    )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class _SpoolFile(File):
    """A finished spool file. ``FileSystemStorage`` moves a file that has a
    ``temporary_file_path`` (a rename on the same disk) rather than copying it; other
    backends read it in chunks."""

    def __init__(self, handle: Any, path: Path) -> None:
        super().__init__(handle, name=path.name)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def spool_file_store(*, path: Path, name: str) -> str:
    """Move the finished spool file ``path`` into the recordings' storage as ``name``; the
    name it was stored under (the storage may change it). The spool file is gone after."""
    with path.open("rb") as handle:
        stored = recording_storage().save(name, _SpoolFile(handle, path))
    path.unlink(missing_ok=True)  # a backend that copied it
    return stored
