"""FFmpeg's WHIP muxer (``-f whip``) against the SFU's own publisher session: its DTLS
handshake completes on the SFU's first flight, without a re-send.

FFmpeg answers ``a=setup:passive``: the SFU is the DTLS client. FFmpeg's muxer reads its
socket for ICE until a DTLS datagram arrives and then lets OpenSSL read the next one, so it
lost the SFU's ClientHello, and its handshake waited for a re-send: OpenSSL's 1 s timer
(FFmpeg's own timing read "dtls:1002.59"), then the SFU's early re-send (100 ms). The SFU
now sends its ClientHello twice at once (``aiortc_adapter.hasten_dtls_handshake``).

The WHIP endpoint here is a minimal HTTP server in the test, answering with
``Router.publish``: the handshake is the SFU's, with nothing of the web side around it."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from sfu import Router
from testpeers import wait_until

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

PUBLISH_SECONDS = 2


def ffmpeg_whip_command(url: str, seconds: int) -> list[str]:
    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel", "verbose",
        "-re",
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=30:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "30",
        "-tune", "zerolatency", "-preset", "ultrafast", "-b:v", "300k",
        "-c:a", "libopus", "-ar", "48000", "-ac", "2",
        "-f", "whip",
        url,
    ]  # fmt: skip


class WhipEndpoint:
    """Answers FFmpeg's POST with ``router.publish`` (201, its answer) and its DELETE (200)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.requests: list[str] = []
        self._ids = itertools.count(1)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *header_lines = head.split("\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in header_lines if line)
        )
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        method = request_line.split()[0]
        self.requests.append(method)
        if method == "POST":
            session = await self.router.publish(body.decode())
            answer = session.answer_sdp.encode()
            writer.write(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\n"
                b"Location: /whip/session/%d\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (next(self._ids), len(answer), answer)
            )
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_ffmpegs_dtls_handshake_needs_no_resend(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = WhipEndpoint(router)
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="sfu.aiortc_adapter"),
            caplog.at_level(logging.DEBUG, logger="aiortc.rtcdtlstransport"),
        ):
            ffmpeg = await asyncio.create_subprocess_exec(
                *ffmpeg_whip_command(f"http://127.0.0.1:{port}/whip", PUBLISH_SECONDS),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await asyncio.wait_for(ffmpeg.communicate(), 60)
        output = stderr.decode(errors="replace")
        assert ffmpeg.returncode == 0, output
        assert "DTLS handshake is done" in output, output
        assert endpoint.requests == ["POST", "DELETE"], output
        assert await wait_until(lambda: router.publisher is not None)
        publisher = router.publisher
        assert publisher is not None
        assert all(p.totals().packets_received > 0 for p in publisher.producers), output
        messages = [record.getMessage() for record in caplog.records]
        # no flight again on a timer: neither the SFU's early one nor OpenSSL's
        assert [m for m in messages if "DTLS flight sent again" in m] == [], output
        assert [m for m in messages if "DTLS handling timeout" in m] == [], output
    finally:
        server.close()
        await server.wait_closed()
