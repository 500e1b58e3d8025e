"""Prometheus metrics: who may read them, the ``/metrics`` view, a ``runsfu`` worker's own
listener, and the metrics of the web side (signaling, WHIP/WHEP, the event loop).

Every process exposes its own metrics and Prometheus scrapes each (docs/METRICS.md): daphne
at ``/metrics``, each ``runsfu`` worker on its ``METRICS_SFU_PORT``. The SFU's metrics are
``signaling.gateway.metrics``', read from the routers at scrape time. Scrapes run on the
process's event loop, where the SFU's objects live.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import weakref
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from onair.conf import onair_settings
from onair.exception_handler import application_error_response
from onair.exceptions import (
    ApplicationError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
)

# A ``_created`` series beside every counter and histogram doubles what is stored for a
# start time Prometheus does not need (it sees resets).
disable_created_metrics()

# --- the web side's metrics ------------------------------------------------------------

signaling_messages = Counter(
    "onair_signaling_messages",
    "WebSocket signaling messages received, by endpoint (studio, watch) and type "
    "(invalid: refused before a type was known).",
    ["endpoint", "type"],
)
signaling_errors = Counter(
    "onair_signaling_errors",
    "Errors sent to signaling clients (error and chat_error messages), by endpoint and code.",
    ["endpoint", "code"],
)
http_session_requests = Counter(
    "onair_http_session_requests",
    "WHIP and WHEP requests (endpoint, session resource and state), by protocol, method "
    "and response status.",
    ["protocol", "method", "status"],
)
event_loop_lag_seconds = Histogram(
    "onair_event_loop_lag_seconds",
    "How late the event loop ran a timer due every 0.5 s: time other work held the loop.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

LAG_INTERVAL_SECONDS = 0.5
_lag_monitors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def loop_lag_watch() -> None:
    """Measure the running event loop's lag from now on (once per loop)."""
    loop = asyncio.get_running_loop()
    task = _lag_monitors.get(loop)
    if task is None or task.done():
        _lag_monitors[loop] = loop.create_task(_watch_lag(loop.time))


def loop_lag_unwatch() -> None:
    """Stop measuring the running event loop's lag (the process stops)."""
    task = _lag_monitors.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()


async def _watch_lag(clock: Callable[[], float]) -> None:
    while True:
        due = clock() + LAG_INTERVAL_SECONDS
        await asyncio.sleep(LAG_INTERVAL_SECONDS)
        event_loop_lag_seconds.observe(max(clock() - due, 0.0))


# --- access ------------------------------------------------------------------------------


def metrics_access_check(*, address: str | None, authorization: str | None) -> None:
    """Whether a client may read the metrics: with the bearer token (``METRICS_TOKEN``), or
    from an allowed address (``METRICS_ALLOWED_ADDRESSES``). Neither configured: closed, as
    if there were no metrics (404); a token configured: 401 without it; else 403."""
    conf = onair_settings().metrics
    if not conf.token and not conf.allowed_addresses:
        raise NotFoundError("Not found.")
    if conf.token and authorization is not None:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), conf.token.encode()
        ):
            return
    if address is not None and _address_allowed(address, conf.allowed_addresses):
        return
    if conf.token:
        raise NotAuthenticatedError("The metrics need a bearer token.")
    raise PermissionDeniedError("The metrics are not served to this address.")


def _address_allowed(address: str, networks: tuple[str, ...]) -> bool:
    try:
        client = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(n, strict=False) for n in networks)


def metrics_exposition(accept: str | None) -> tuple[bytes, str]:
    """This process's metrics in the format the scraper accepts (Prometheus's text format,
    or OpenMetrics), and its content type."""
    loop_lag_watch()
    encode, content_type = choose_encoder(accept or "")
    return encode(REGISTRY), content_type


# --- daphne: /metrics --------------------------------------------------------------------


@never_cache
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: async, so the SFU's routers are read on the loop that runs them."""
    try:
        metrics_access_check(
            address=request.META.get("REMOTE_ADDR"),
            authorization=request.headers.get("Authorization"),
        )
    except ApplicationError as exc:
        response = application_error_response(exc)
        if isinstance(exc, NotAuthenticatedError):
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics_exposition(request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)


# --- runsfu: a worker's own listener ---------------------------------------------------

MAX_CONNECTIONS = 8  # scrapers are few: more at once are refused
REQUEST_SECONDS = 5.0  # to send the request's head
MAX_HEAD_BYTES = 8192
PLAIN = "text/plain; charset=utf-8"
_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class MetricsListener:
    """``GET /metrics`` over HTTP/1.1 on the running loop (a ``runsfu`` worker has no web
    server): one request per connection, its head within ``REQUEST_SECONDS`` and
    ``MAX_HEAD_BYTES``, at most ``MAX_CONNECTIONS`` at once; the same access rule as daphne's
    ``/metrics``."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port``; the address bound (``port`` 0: any free port)."""
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=MAX_HEAD_BYTES, reuse_address=True
        )
        loop_lag_watch()
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                await _respond(writer, 503, b"Too many connections.\n")
                return
            try:
                async with asyncio.timeout(REQUEST_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return  # a client that sends no request in time, or too much: just closed
            status, body, content_type = _answer(head, writer.get_extra_info("peername"))
            await _respond(writer, status, body, content_type)
        except ConnectionError:
            pass  # the scraper went away: nothing to answer
        except asyncio.CancelledError:
            # the process stops (its loop cancels what runs): the connection just closes, and
            # asyncio's stream callback (3.11) would report a cancelled handler as an error
            pass
        finally:
            self._open -= 1
            writer.close()


def _answer(head: bytes, peer: tuple[str, int] | None) -> tuple[int, bytes, str]:
    """The status, body and content type that answer a request's head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return 400, b"Bad request.\n", PLAIN
    method, target = parts[0], parts[1].partition("?")[0]
    if target != "/metrics":
        return 404, b"Not found.\n", PLAIN
    if method != "GET":
        return 405, b"Use GET.\n", PLAIN
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        metrics_access_check(
            address=peer[0] if peer else None, authorization=headers.get("authorization")
        )
    except ApplicationError as exc:
        status = {NotFoundError: 404, NotAuthenticatedError: 401}.get(type(exc), 403)
        return status, f"{exc.message}\n".encode(), PLAIN
    return 200, *metrics_exposition(headers.get("accept"))


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = PLAIN
) -> None:
    extra = 'WWW-Authenticate: Bearer realm="metrics"\r\n' if status == 401 else ""
    writer.write(
        (
            f"HTTP/1.1 {status} {_STATUS_TEXT[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
