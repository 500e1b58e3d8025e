from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.testing import HttpCommunicator, WebsocketCommunicator

from onair.asgi import application


async def test_http_goes_to_django(db: None) -> None:
    communicator = HttpCommunicator(
        application, "GET", "/healthz", headers=[(b"host", b"localhost")]
    )
    response = await communicator.get_response()
    assert response["status"] == 200


async def test_static_files_are_served() -> None:
    # Raw ASGI: file responses end with a body-less message HttpCommunicator cannot read.
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/static/css/onair.css",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output()
    body = b""
    while True:
        message = await communicator.receive_output()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    assert start["status"] == 200
    assert b"--accent" in body


async def test_websocket_from_a_foreign_origin_is_refused() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/anything/", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_websocket_from_the_site_reaches_the_router() -> None:
    communicator = WebsocketCommunicator(
        application,
        "/ws/no-such-route/",
        headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
    )
    # Past the origin check and the auth middleware, the URL router finds no route.
    with pytest.raises(ValueError, match="No route found"):
        await communicator.connect()
