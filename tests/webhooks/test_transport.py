"""One attempt's POST against real sockets: TLS certificates are checked, a receiver that
does not answer costs the timeout and no more, redirects are not followed, and a long
answer is read only up to its cap."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from webhooks.transport import RESPONSE_READ_BYTES, post


def _serve(server: ThreadingHTTPServer) -> Iterator[int]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Answers(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"x" * (RESPONSE_READ_BYTES * 4)
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def answers() -> Iterator[int]:
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), Answers))


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[int]:
    """An HTTPS server with a self-signed certificate (which no client should trust)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject]
    subprocess.run(command, check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


def test_a_certificate_no_one_trusts_fails_the_attempt(tls: int) -> None:
    outcome = post(
        f"https://127.0.0.1:{tls}/", body=b"{}", headers={}, timeout=5, allow_private=True
    )
    assert not outcome.ok
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error


def test_a_receiver_that_never_answers_fails_at_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        outcome = post(
            f"http://127.0.0.1:{port}/", body=b"{}", headers={}, timeout=0.5, allow_private=True
        )
    assert (outcome.ok, outcome.status) == (False, None)
    assert outcome.error == "no answer within 0.5 s"


def test_redirects_are_not_followed_and_answers_are_cut(answers: int) -> None:
    moved = post(
        f"http://127.0.0.1:{answers}/redirect",
        body=b"{}",
        headers={},
        timeout=5,
        allow_private=True,
    )
    assert (moved.ok, moved.status) == (False, 302)
    assert "redirects are not followed" in moved.error
    failed = post(
        f"http://127.0.0.1:{answers}/", body=b"{}", headers={}, timeout=5, allow_private=True
    )
    assert (failed.ok, failed.status) == (False, 500)
    assert failed.error.startswith("HTTP 500: xxx")
    assert len(failed.error) < 400
