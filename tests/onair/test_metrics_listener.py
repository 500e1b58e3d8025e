"""A ``runsfu`` worker's metrics listener (``onair.metrics.MetricsListener``) over real
sockets: ``GET /metrics`` with the token only; anything else a clear status; a client that
sends no request in time, or too long a one, is closed; past ``MAX_CONNECTIONS`` at once a
connection is refused with 503."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onair import metrics
from onair.metrics import MAX_CONNECTIONS, MAX_HEAD_BYTES, MetricsListener

TOKEN = "listener-token"


@pytest.fixture
async def listener(settings: Any) -> AsyncIterator[tuple[str, int]]:
    settings.ONAIR = {**settings.ONAIR, "METRICS_TOKEN": TOKEN}
    served = MetricsListener()
    address = await served.start("127.0.0.1", 0)
    yield address
    await served.close()


async def exchange(address: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def get(path: str = "/metrics", *headers: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: sfu", *headers]) + "\r\n\r\n").encode()


async def test_the_token_reads_the_metrics_and_nothing_else_does(
    listener: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    status, headers, body = await exchange(
        listener, get("/metrics", f"Authorization: Bearer {TOKEN}")
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "onair_event_loop_lag_seconds" in names
    openmetrics = "Accept: application/openmetrics-text; version=1.0.0"
    status, headers, body = await exchange(
        listener, get("/metrics", f"Authorization: Bearer {TOKEN}", openmetrics)
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")

    status, headers, body = await exchange(listener, get())
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="metrics"')
    assert b"onair_" not in body
    assert (await exchange(listener, get("/metrics", "Authorization: Bearer nope")))[0] == 401
    assert (await exchange(listener, get("/")))[0] == 404
    assert (await exchange(listener, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await exchange(listener, b"\x16\x03\x01 garbage\r\n\r\n"))[0] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert TOKEN not in caplog.text


async def test_slow_long_and_too_many_clients_are_cut_off(
    listener: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "REQUEST_SECONDS", 0.3)
    # A request head that never ends is closed unanswered at its deadline ...
    reader, writer = await asyncio.open_connection(*listener)
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    # ... and so is one longer than MAX_HEAD_BYTES (reset: its bytes were left unread).
    reader, writer = await asyncio.open_connection(*listener)
    writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES)
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    # MAX_CONNECTIONS idle connections hold every place: the next one is refused.
    monkeypatch.setattr(metrics, "REQUEST_SECONDS", 30.0)
    idle = [await asyncio.open_connection(*listener) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection(*listener)
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503 ")
    writer.close()
    for _, writer in idle:
        writer.close()
    await asyncio.sleep(0.1)
    status, _, _ = await exchange(listener, get("/metrics", f"Authorization: Bearer {TOKEN}"))
    assert status == 200
