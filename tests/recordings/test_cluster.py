"""Recording in cluster mode, with real processes (``tests.cluster``): the origin worker
records; when it is SIGKILLed, the worker that announces its death finishes the recording
from its spool file (``interrupted``, and it plays); the publisher back on the new origin
starts a new recording, which the broadcast's end makes ``ready``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import av
import pytest

from testpeers import TestPublisher
from tests.cluster import (
    CLUSTER_SKIP,
    Cluster,
    cluster_fixture,  # noqa: F401 (provides the "cluster" fixture)
    http,
)
from tests.signaling.http_clients import SDP

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, CLUSTER_SKIP]


def _recordings(cluster: Cluster, stream_id: str) -> list[dict[str, Any]]:
    code = (
        "import json; from recordings.models import Recording; print(json.dumps(["
        "{'id': str(r.pk), 'state': r.state, 'reason': r.stop_reason, 'file': r.file.name,"
        " 'frames': r.video_frames, 'worker': r.worker} for r in "
        f"Recording.objects.filter(stream_id={stream_id}).order_by('started_at')]))"
    )
    return list(json.loads(cluster.manage("shell", "-c", code).splitlines()[-1]))


async def _until(cluster: Cluster, stream_id: str, done: Any, within: float = 30) -> list[Any]:
    deadline = time.monotonic() + within
    while not done(rows := await asyncio.to_thread(_recordings, cluster, stream_id)):
        assert time.monotonic() < deadline, (rows, cluster.logs())
        await asyncio.sleep(0.5)
    return rows


async def _publish(cluster: Cluster, slug: str, key: str) -> TestPublisher:
    publisher = TestPublisher()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": SDP}
    response = await http(
        "POST", f"{cluster.daphne[0]}/whip/{slug}", await publisher.create_offer(), headers
    )
    assert response.status == 201, (response, cluster.logs())
    await publisher.accept_answer(response.body)
    return publisher


def _spooled(spool: Path, recording_id: str) -> int:
    return sum(path.stat().st_size for path in spool.glob(f"{recording_id}.*"))


def _plays(cluster: Cluster, name: str) -> int:
    with av.open(str(Path(cluster.env["RECORDINGS_ROOT"]) / name)) as container:
        return sum(1 for _ in container.decode(video=0))


async def test_the_origin_records_and_a_dead_origins_recording_is_finished(
    cluster: Cluster,
) -> None:
    slug, stream_id, key = cluster.new_stream("Recorded in a cluster")
    record = f"from broadcast.models import Stream; Stream.objects.filter(pk={stream_id})"
    cluster.manage("shell", "-c", record + ".update(record=True)")
    publisher = await _publish(cluster, slug, key)
    (first,) = await _until(cluster, stream_id, lambda rows: rows and rows[0]["worker"])
    origin = next(w for w in cluster.workers() if stream_id in w.publishing)
    assert first["worker"] == origin.id
    spool = Path(cluster.env["ONAIR_RECORDING_SPOOL_DIR"])
    deadline = time.monotonic() + 20
    while _spooled(spool, first["id"]) < 50_000:
        assert time.monotonic() < deadline, cluster.logs()
        await asyncio.sleep(0.2)

    process, _ = cluster.worker_process(origin)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    await publisher.close()
    rows = await _until(cluster, stream_id, lambda rows: rows[0]["state"] != "recording")
    assert (rows[0]["state"], rows[0]["reason"]) == ("ready", "interrupted"), cluster.logs()
    assert _plays(cluster, rows[0]["file"]) == rows[0]["frames"] > 0

    # The publisher back, on the live worker: a new recording, finished by the broadcast's end.
    publisher = await _publish(cluster, slug, key)
    rows = await _until(cluster, stream_id, lambda rows: len(rows) == 2 and rows[1]["worker"])
    await asyncio.sleep(3)
    code = (
        "from broadcast.models import Stream; from broadcast.services import stream_end; "
        f"stream_end(stream=Stream.objects.get(pk={stream_id}), reason='api')"
    )
    cluster.manage("shell", "-c", code)
    rows = await _until(cluster, stream_id, lambda rows: rows[1]["state"] != "recording")
    assert (rows[1]["state"], rows[1]["reason"]) == ("ready", "ended"), cluster.logs()
    assert _plays(cluster, rows[1]["file"]) == rows[1]["frames"] > 0
    await publisher.close()
