"""A server SIGKILLed under a recorded broadcast (#21 acceptance 2): the next one to start
finishes the recording it left open from its spool file, ``ready`` with reason
``interrupted``, and the file plays up to within a few seconds of the kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import av

from onair.environment import app_environment
from testpeers import TestPublisher
from tests.daphne import daphne_process, http_request, log_errors, manage

# What a kill may cost: the cluster being written (at most 2 s) and the connection set-up
# between the recording's row and its first frame.
LOST_AT_MOST_SECONDS = 4.0


def _shell(env: dict[str, str], code: str) -> Any:
    return json.loads(manage(env, "shell", "-c", code).splitlines()[-1])


def _recordings(env: dict[str, str]) -> list[dict[str, Any]]:
    return list(
        _shell(
            env,
            "import json; from recordings.models import Recording; print(json.dumps(["
            "{'state': r.state, 'reason': r.stop_reason, 'detail': r.detail, 'file': r.file.name,"
            " 'duration': r.duration, 'frames': r.video_frames, 'spool': r.spool_path,"
            " 'started': r.started_at.timestamp()} for r in Recording.objects.all()]))",
        )
    )


async def test_a_recording_left_by_a_killed_server_is_finished_at_the_next_start(
    tmp_path: Path,
) -> None:
    env = app_environment(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        RECORDINGS_ROOT=str(tmp_path / "recordings"),
        ONAIR_RECORDING_SPOOL_DIR=str(tmp_path / "spool"),
        ONAIR_RECORD_BY_DEFAULT="1",
    )
    manage(env, "migrate", "--noinput", "-v0")
    slug, key = _shell(
        env,
        "import json; from django.contrib.auth.models import User; "
        "from broadcast.services import stream_create; "
        "stream, key = stream_create(owner=User.objects.create_user('k'), title='Killed'); "
        "print(json.dumps([stream.slug, key.secret]))",
    )
    publisher = TestPublisher()
    with daphne_process(env, tmp_path / "first.log") as first:
        offer = await publisher.create_offer()
        response = await asyncio.to_thread(
            http_request,
            "POST",
            f"{first.base_url}/whip/{slug}",
            offer,
            {"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
            timeout=20,
        )
        assert response.status == 201, response
        await publisher.accept_answer(response.body)
        spool = tmp_path / "spool"
        deadline = time.monotonic() + 20
        while not any(path.stat().st_size > 50_000 for path in spool.glob("*.webm")):
            assert time.monotonic() < deadline, first.log()
            await asyncio.sleep(0.2)
        await asyncio.sleep(4)
        killed_at = time.time()
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
    await publisher.close()
    (left,) = _recordings(env)
    assert left["state"] == "recording"

    with daphne_process(env, tmp_path / "second.log") as second:
        deadline = time.monotonic() + 30
        while (recording := _recordings(env)[0])["state"] == "recording":
            assert time.monotonic() < deadline, second.log()
            await asyncio.sleep(0.5)
        assert log_errors(second.log()) == [], second.log()

    assert (recording["state"], recording["reason"]) == ("ready", "interrupted")
    assert recording["detail"]
    assert not list(spool.iterdir())
    with av.open(str(tmp_path / "recordings" / recording["file"])) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == recording["frames"] > 0
    lost = killed_at - recording["started"] - recording["duration"]
    print(f"recorded {recording['duration']:.1f} s; {lost:.1f} s before the kill were lost")
    assert lost < LOST_AT_MOST_SECONDS
