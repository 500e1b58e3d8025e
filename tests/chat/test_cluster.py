"""The chat in cluster mode, with real processes (``tests.cluster``): a post, a deletion and
a settings change made through one daphne process reach a page on the other, through the
Redis channel layer."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets

from tests.cluster import (
    CLUSTER_SKIP,
    Cluster,
    cluster_fixture,  # noqa: F401 (provides the "cluster" fixture)
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, CLUSTER_SKIP]


def _owner_session(cluster: Cluster, slug: str) -> str:
    code = (
        "from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY; "
        "from django.contrib.sessions.backends.db import SessionStore; "
        "from broadcast.models import Stream; "
        f"user = Stream.objects.get(slug={slug!r}).owner; session = SessionStore(); "
        "session[SESSION_KEY] = str(user.pk); "
        "session[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'; "
        "session[HASH_SESSION_KEY] = user.get_session_auth_hash(); session.create(); "
        "print(session.session_key)"
    )
    return cluster.manage("shell", "-c", code).splitlines()[-1]


async def _join(base_url: str, path: str, cookie: str | None = None) -> Any:
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else None
    socket = await websockets.connect(
        base_url.replace("http://", "ws://") + path,
        origin=base_url,  # type: ignore[arg-type]
        additional_headers=headers,
    )
    assert json.loads(await socket.recv())["type"] == "welcome"
    await socket.send(json.dumps({"type": "chat_join"}))
    await _next(socket, "chat_history")
    return socket


async def _next(socket: Any, kind: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await socket.recv())
        if message["type"] == kind:
            return message


async def test_chat_reaches_pages_on_every_daphne_process(cluster: Cluster) -> None:
    daphne_a, daphne_b = cluster.daphne
    slug, _, _ = cluster.new_stream("Chat in a cluster")
    owner = await _join(daphne_a, f"/ws/studio/{slug}/", _owner_session(cluster, slug))
    viewer = await _join(daphne_b, f"/ws/watch/{slug}/")
    try:
        await owner.send(json.dumps({"type": "chat", "text": "hello from A"}))
        said = (await _next(viewer, "chat_message"))["message"]
        assert (said["text"], said["owner"]) == ("hello from A", True)

        await owner.send(json.dumps({"type": "chat_delete", "id": said["id"]}))
        assert (await _next(viewer, "chat_deleted"))["id"] == said["id"]

        await owner.send(json.dumps({"type": "chat_settings", "slow_mode_seconds": 10}))
        settings = (await _next(viewer, "chat_settings"))["settings"]
        assert settings["slow_mode_seconds"] == 10
    finally:
        await owner.close()
        await viewer.close()
