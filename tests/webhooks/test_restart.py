"""Acceptance 2 (#24) across a restart: the server (``python -m onair.serve``, a subprocess)
enqueues ``stream.live`` for a real WHIP broadcast while the receiver is down, tries it and
is SIGKILLed; the next server to start resumes from the rows, ends the broadcast left live
after its grace period (``stream.ended``), and once the receiver comes up both arrive,
signed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from onair.environment import app_environment
from testpeers import TestPublisher
from tests.daphne import daphne_process, free_port, http_request, log_errors, manage
from tests.webhooks.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _shell(env: dict[str, str], code: str) -> Any:
    return json.loads(manage(env, "shell", "-c", code).splitlines()[-1])


def _deliveries(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    rows = _shell(
        env,
        "import json; from webhooks.models import WebhookDelivery as D; print(json.dumps({"
        "d.event_type: {'id': str(d.event_id), 'status': d.status, 'attempts': d.attempts,"
        " 'error': d.last_error} for d in D.objects.all()}))",
    )
    return dict(rows)


async def _wait_for(env: dict[str, str], done: Any, *, within: float, log: Any) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while not done(rows := await asyncio.to_thread(_deliveries, env)):
        assert time.monotonic() < deadline, (rows, log())
        await asyncio.sleep(0.3)
    return rows


async def test_deliveries_survive_a_killed_server_and_arrive_once_the_receiver_is_up(
    tmp_path: Path,
) -> None:
    receiver = Receiver(free_port())
    env = app_environment(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        ONAIR_WEBHOOK_ALLOW_PRIVATE="1",
        ONAIR_WEBHOOK_RETRY_FIRST_SECONDS="0.3",
        ONAIR_WEBHOOK_RETRY_MAX_SECONDS="1",
        ONAIR_WEBHOOK_POLL_SECONDS="0.5",
        ONAIR_WEBHOOK_TIMEOUT_SECONDS="2",
        ONAIR_PUBLISHER_GRACE_SECONDS="2",
    )
    manage(env, "migrate", "--noinput", "-v0")
    slug, key, secret = _shell(
        env,
        "import json; from django.contrib.auth.models import User; "
        "from broadcast.services import stream_create; "
        "from webhooks.services import webhook_endpoint_create; "
        "owner = User.objects.create_user('w'); "
        "stream, key = stream_create(owner=owner, title='Restarted'); "
        f"hook = webhook_endpoint_create(owner=owner, url={receiver.url!r}, "
        "events=['stream.live', 'stream.ended']); "
        "print(json.dumps([stream.slug, key.secret, hook.secret]))",
    )
    publisher = TestPublisher()
    try:
        with daphne_process(env, tmp_path / "first.log") as first:
            response = await asyncio.to_thread(
                http_request,
                "POST",
                f"{first.base_url}/whip/{slug}",
                await publisher.create_offer(),
                {"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
                timeout=20,
            )
            assert response.status == 201, response
            await publisher.accept_answer(response.body)
            tried = await _wait_for(
                env,
                lambda rows: rows.get("stream.live", {}).get("attempts", 0) >= 2,
                within=30,
                log=first.log,
            )
            os.kill(first.pid, signal.SIGKILL)
            first.process.wait(timeout=10)
    finally:
        await publisher.close()
    live = tried["stream.live"]
    assert live["status"] == "pending"
    assert "refused" in live["error"].lower(), live

    with daphne_process(env, tmp_path / "second.log") as second:
        # The broadcast left live ends after its grace period, as nobody publishes.
        await _wait_for(env, lambda rows: "stream.ended" in rows, within=30, log=second.log)
        receiver.start()
        try:
            rows = await _wait_for(
                env,
                lambda rows: all(row["status"] == "delivered" for row in rows.values()),
                within=30,
                log=second.log,
            )
        finally:
            receiver.stop()
        assert log_errors(second.log()) == [], second.log()

    assert set(rows) == {"stream.live", "stream.ended"}
    by_type = {item.event["type"]: item for item in receiver.received}
    assert set(by_type) == {"stream.live", "stream.ended"}
    assert by_type["stream.live"].event["id"] == live["id"]  # the event the first one made
    for item in by_type.values():
        assert item.signed_with(secret), item.headers
        assert item.event["data"]["stream"]["slug"] == slug
    assert by_type["stream.ended"].event["data"]["stream"]["end_reason"] == "publisher_lost"
    assert (
        secret not in (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    )
