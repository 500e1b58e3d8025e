from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.test import override_settings

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


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (b"http://localhost:9999", b"localhost:8000"),  # another port on the same host
        (b"http://localhost", b"localhost:8000"),
        (b"http://localhost:8000", b"localhost"),
        (b"http://localhost:8000", None),  # no Host: only the default port
        (b"http://127.0.0.1:8000", b"localhost:8000"),
        (b"http://evil.example:8000", b"evil.example:8000"),  # not in ALLOWED_HOSTS
        (b"null", b"localhost:8000"),
        (b"ftp://localhost:8000", b"localhost:8000"),
        (b"http://localhost:8000/path", b"localhost:8000"),
        (b"http://localhost:99999", b"localhost:99999"),
        (None, b"localhost:8000"),
    ],
)
async def test_websocket_origin_must_be_the_site_itself_scheme_host_and_port(
    origin: bytes | None, host: bytes | None
) -> None:
    headers = [(name, value) for name, value in ((b"origin", origin), (b"host", host)) if value]
    communicator = WebsocketCommunicator(application, "/ws/no-such-route/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        (b"http://localhost:8000", b"localhost:8000", "ws"),
        (b"http://[::1]:8000", b"[::1]:8000", "ws"),
        (b"http://localhost", None, "ws"),  # an in-process client without a Host header
        (b"https://localhost", b"localhost", "ws"),  # TLS ended by a proxy in front
        (b"https://localhost:8443", b"localhost:8443", "wss"),
    ],
)
async def test_websocket_from_the_site_itself_is_let_through(
    origin: bytes, host: bytes | None, scheme: str
) -> None:
    headers = [(name, value) for name, value in ((b"origin", origin), (b"host", host)) if value]
    communicator = WebsocketCommunicator(application, "/ws/no-such-route/", headers=headers)
    communicator.scope["scheme"] = scheme
    with pytest.raises(ValueError, match="No route found"):
        await communicator.connect()


async def test_an_http_page_cannot_open_a_tls_websocket() -> None:
    communicator = WebsocketCommunicator(
        application,
        "/ws/no-such-route/",
        headers=[(b"origin", b"http://localhost:8443"), (b"host", b"localhost:8443")],
    )
    communicator.scope["scheme"] = "wss"
    connected, _ = await communicator.connect()
    assert not connected


@override_settings(
    ALLOWED_HOSTS=["internal"], CSRF_TRUSTED_ORIGINS=["https://live.example.com:8443"]
)
async def test_csrf_trusted_origins_are_let_through_with_their_port() -> None:
    def connect(origin: bytes) -> WebsocketCommunicator:
        return WebsocketCommunicator(
            application, "/ws/no-such-route/", headers=[(b"origin", origin), (b"host", b"internal")]
        )

    with pytest.raises(ValueError, match="No route found"):
        await connect(b"https://live.example.com:8443").connect()
    assert not (await connect(b"https://live.example.com").connect())[0]
