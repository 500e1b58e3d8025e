"""OnAir's ASGI app with one test-only route, ``GET /__probe__/tasks``: how many asyncio
tasks the server's event loop holds. Only the fuzz suite serves this module (daphne
``tests.fuzz.probe_asgi:application``); production serves ``onair.asgi``, which has no
such route."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from onair.asgi import application as onair_application

PROBE_PATH = "/__probe__/tasks"


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == PROBE_PATH:
        body = json.dumps({"tasks": len(asyncio.all_tasks())}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await onair_application(scope, receive, send)
