"""What runs in the background for recordings: finishing those a dead cluster worker left
(each once, by a worker on their machine), and retention's hourly task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone
from pytest_django.fixtures import Settings

from onair.retention import expire_periodically
from recordings.models import Recording
from recordings.services import recording_assigned, recording_begin
from signaling.gateway.recording import recordings_repair_workers, this_host
from tests.recordings.conftest import RecordingFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_dead_workers_recordings_on_this_machine_are_finished_once(
    make_stream: Callable,
) -> None:
    stream, _ = await database_sync_to_async(make_stream)()

    def begin(host: str, worker: str) -> Recording:
        recording = recording_begin(stream=stream)
        recording_assigned(recording_id=str(recording.pk), host=host, worker=worker)
        return recording

    dead_here = await database_sync_to_async(begin)(this_host(), "wdead")
    alive_here = await database_sync_to_async(begin)(this_host(), "walive")
    dead_elsewhere = await database_sync_to_async(begin)("another-machine", "wdead")

    def dead(worker: str) -> bool:
        return worker == "wdead"

    assert await recordings_repair_workers(dead=dead, claimant="wme") == 1
    assert await recordings_repair_workers(dead=dead, claimant="wother") == 0

    def states() -> dict[str, tuple[str, str]]:
        return {str(r.pk): (r.state, r.stop_reason) for r in Recording.objects.all()}

    found = await database_sync_to_async(states)()
    # Nothing was written before it died (no keyframe yet): failed, with the reason.
    assert found[str(dead_here.pk)] == ("failed", "interrupted")
    await database_sync_to_async(dead_here.refresh_from_db)()
    assert "no file" in dead_here.detail
    assert dead_here.worker == "wme"  # claimed before it was finished
    assert found[str(alive_here.pk)] == ("recording", "")
    assert found[str(dead_elsewhere.pk)] == ("recording", "")


async def test_the_servers_retention_task_deletes_old_recordings(
    make_stream: Callable, make_recording: RecordingFactory, settings: Settings
) -> None:
    settings.ONAIR = {**settings.ONAIR, "RECORDING_RETENTION_DAYS": 7}
    stream, _ = await database_sync_to_async(make_stream)()
    old = await database_sync_to_async(make_recording)(
        stream, started_at=timezone.now() - timedelta(days=8)
    )

    task = asyncio.ensure_future(expire_periodically(every=0.05))
    try:
        for _ in range(100):
            if not await database_sync_to_async(Recording.objects.filter(pk=old.pk).exists)():
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    assert not await database_sync_to_async(Recording.objects.exists)()
    await asyncio.gather(task, return_exceptions=True)
