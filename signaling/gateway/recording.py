"""Recording's side of the gateway: the spec the SFU records with, and what becomes of a
spool file once the SFU stopped writing it, or once its writer died.

The SFU finalizes a recording's file as it stops it (``RecordingEnded``); the file then
moves into the recordings' storage and its row is filled: ``ready``, or ``failed`` with the
reason when nothing playable was recorded. A recording a dead process left ``recording``
is finalized here (``sfu.recording_files.finalize``: what it had written, up to the crash,
remuxed with an index) and finished the same way (reason ``interrupted``): at the next
start of the server (embedded mode: ``recordings_repair``), and in cluster mode when the
cluster notices that its worker died or at the next start of a worker on its machine
(``recordings_repair_workers``); none is left unplayable.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from channels.db import database_sync_to_async

from onair.conf import onair_settings
from recordings.models import Recording
from recordings.selectors import recording_list_unfinished
from recordings.services import (
    RecordingFile,
    recording_assigned,
    recording_claim,
    recording_finish,
    recording_started,
    recording_store,
)
from recordings.storage import recording_storage, spool_directory
from sfu.recorder import RecordingSpec
from sfu.recording_files import RecordingFileError, RecordingInfo, finalize
from signaling.gateway.contract import RecordingEnded

logger = logging.getLogger(__name__)

INTERRUPTED_DETAIL = "The server recording it stopped abruptly; kept up to that moment."
NOTHING_LEFT_DETAIL = "The server recording it stopped abruptly, and no file of it was found."


def recording_spec(recording_id: str) -> RecordingSpec:
    """What the SFU records ``recording_id`` with: this machine's spool directory and the
    limits of the settings."""
    conf = onair_settings().recording
    return RecordingSpec(
        recording_id=recording_id,
        directory=spool_directory(),
        max_bytes=conf.max_bytes,
        max_seconds=conf.max_seconds,
        min_free_bytes=conf.min_free_bytes,
    )


def this_host() -> str:
    """The machine a spool file is on, as recordings name it."""
    return socket.gethostname()


async def recording_assign(*, recording_id: str, worker_id: str | None) -> None:
    """This process (the cluster worker ``worker_id``) records ``recording_id``."""
    await database_sync_to_async(recording_assigned)(
        recording_id=recording_id, host=this_host(), worker=worker_id or ""
    )


async def recording_began(*, recording_id: str, path: str, container: str) -> None:
    await database_sync_to_async(recording_started)(
        recording_id=recording_id, spool_path=path, container=container
    )


@dataclass(frozen=True)
class _Stored:
    """A spool file finalized and moved into storage (``file`` and its storage ``name``),
    or why not (``problem``)."""

    file: RecordingFile | None = None
    name: str = ""
    problem: str = ""


def _finalize_and_store(
    recording_id: str, path: Path | None, file: RecordingFile | None
) -> _Stored:
    """The file work of finishing a recording (no database access): ``file`` describes
    ``path`` when the SFU finalized it itself, else (left by a crash) it is finalized
    here."""
    if path is None or not path.exists():
        return _Stored()
    if file is None:
        try:
            file = _described(finalize(path))
        except RecordingFileError as exc:
            path.unlink(missing_ok=True)  # nothing in it to keep
            return _Stored(problem=exc.reason or "Nothing playable was recorded.")
    try:
        name = recording_store(recording_id=recording_id, spool_path=path)
    except OSError as exc:  # the spool file stays, for someone to recover by hand
        logger.warning("recording %s could not be stored: %s", recording_id, exc)
        return _Stored(problem=f"The file could not be stored: {exc}")
    return _Stored(file=file, name=name)


def _described(info: RecordingInfo) -> RecordingFile:
    return RecordingFile(
        container=info.container,
        duration=info.duration,
        size=info.size,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
        width=info.width,
        height=info.height,
        video_frames=info.video_frames,
    )


async def recording_complete(
    *,
    recording_id: str,
    path: Path | None,
    reason: str,
    detail: str = "",
    file: RecordingFile | None = None,
) -> None:
    """Store the stopped recording's spool file ``path`` (finalized first unless ``file``
    describes it) and finish its row. The file work runs in a thread of its own: a long
    file's remux, or a remote storage, must not hold the event loop or the database
    thread."""
    stored = await asyncio.to_thread(_finalize_and_store, recording_id, path, file)
    finished = await database_sync_to_async(recording_finish)(
        recording_id=recording_id,
        reason=reason,
        detail=stored.problem or detail,
        file=stored.file,
        file_name=stored.name,
    )
    if finished is None and stored.name:
        # Deleted while it was written, or finished by someone else meanwhile.
        await asyncio.to_thread(recording_storage().delete, stored.name)


async def recording_ended(event: RecordingEnded) -> None:
    """The SFU stopped the recording and finalized its file: store it, finish the row."""
    if event.size <= 0 or not event.path:
        await database_sync_to_async(recording_finish)(
            recording_id=event.recording_id,
            reason=event.reason,
            detail=event.detail or "Nothing was recorded: no picture reached the server.",
        )
        return
    file = RecordingFile(
        container=Path(event.path).suffix.lstrip("."),
        duration=event.duration,
        size=event.size,
        video_codec=event.video_codec,
        audio_codec=event.audio_codec,
        width=event.width,
        height=event.height,
        video_frames=event.video_frames,
    )
    await recording_complete(
        recording_id=event.recording_id,
        path=Path(event.path),
        reason=event.reason,
        detail=event.detail,
        file=file,
    )


def _spool_path(recording: Recording) -> Path | None:
    """Where the recording's spool file is on this machine (the SFU names it after the
    recording, whatever its container), if anywhere."""
    if recording.spool_path and Path(recording.spool_path).exists():
        return Path(recording.spool_path)
    return next(iter(sorted(spool_directory().glob(f"{recording.pk}.*"))), None)


async def _finish_left(recording: Recording) -> None:
    logger.info("finishing recording %s, left by a process that died", recording.pk)
    path = await asyncio.to_thread(_spool_path, recording)
    await recording_complete(
        recording_id=str(recording.pk),
        path=path,
        reason=Recording.StopReason.INTERRUPTED,
        detail=INTERRUPTED_DETAIL if path is not None else NOTHING_LEFT_DETAIL,
    )


async def recordings_repair(
    *, before: datetime, running: Callable[[Recording], Awaitable[bool]]
) -> int:
    """Embedded mode, at start: finish every recording left ``recording`` (begun before
    ``before``, this process's start) that no router here writes (``running``): the one
    process that records died. How many."""

    def left() -> list[Recording]:
        return list(recording_list_unfinished().filter(created_at__lt=before))

    finished = 0
    for recording in await database_sync_to_async(left)():
        if not await running(recording):
            await _finish_left(recording)
            finished += 1
    return finished


async def recordings_repair_workers(*, dead: Callable[[str], bool], claimant: str) -> int:
    """Cluster mode: finish the recordings that dead workers (``dead(worker id)``) were
    writing on this machine; the worker ``claimant`` takes each one over first, so that
    only one worker finishes it. A recording written on another machine waits for a
    worker there (its next start). How many."""

    def left() -> list[Recording]:
        unfinished = recording_list_unfinished(host=this_host()).exclude(worker="")
        return [recording for recording in unfinished if dead(recording.worker)]

    finished = 0
    for recording in await database_sync_to_async(left)():
        if await database_sync_to_async(recording_claim)(
            recording_id=str(recording.pk), held_by=recording.worker, claimant=claimant
        ):
            await _finish_left(recording)
            finished += 1
    return finished
