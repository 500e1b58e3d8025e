"""A webhook receiver for tests: a real HTTP server (``http.server``) in a thread that
keeps every POST it gets (headers and body) and answers ``status``."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from webhooks.transport import signature_verify


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def signed_with(self, secret: str, *, tolerance: float = 300) -> bool:
        return signature_verify(
            secret=secret,
            timestamp=self.headers.get("OnAir-Webhook-Timestamp", ""),
            body=self.body,
            header=self.headers.get("OnAir-Webhook-Signature", ""),
            tolerance=tolerance,
            now=time.time(),
        )


class Receiver:
    """Listens on 127.0.0.1:``port`` from ``start()`` to ``stop()``."""

    def __init__(self, port: int, *, status: int = 204) -> None:
        self.port = port
        self.status = status
        self.received: list[Received] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/onair?source=test"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(Received(self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of_type(self, event_type: str) -> list[Received]:
        return [item for item in self.received if item.event["type"] == event_type]
