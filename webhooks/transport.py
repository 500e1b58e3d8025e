"""Where a webhook may go, and one signed POST to it. No Django: the delivery loop runs
``post`` in a thread of its own.

A webhook URL is chosen by its account, so the server must not be made to reach what only
it can reach (SSRF): its host is resolved at each attempt, every address it resolves to
must be public (unless ``allow_private``), and the connection goes to an address that was
checked, never to a second resolution. Redirects are not followed, proxies from the
environment are not used, and at most ``RESPONSE_READ_BYTES`` of the answer are read.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

RESPONSE_READ_BYTES = 65536
SIGNATURE_VERSION = "v1"
USER_AGENT = "OnAir-Webhooks/1"
_ERROR_TEXT_CHARS = 300

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(ValueError):
    """A URL the server will not send to; the message says why (for its owner)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its scheme, host (for ``Host`` and TLS), port and request path."""

    scheme: str
    host: str
    port: int
    path: str


@dataclass(frozen=True)
class Outcome:
    """One attempt: accepted (a 2xx), or not with the answer's status and/or a reason."""

    ok: bool
    status: int | None
    error: str


def url_parse(url: str) -> Target:
    """``url`` split, or ``DestinationRefused``: http(s) only, a host, no credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("Use an http:// or https:// URL.")
    if not parts.hostname:
        raise DestinationRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused(
            "Put no credentials in the URL: check each request's signature instead."
        )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default, path)


def address_is_public(address: IpAddress) -> bool:
    """Whether ``address`` is on the public Internet: not loopback, private, link-local,
    shared (CGNAT), multicast, reserved or unspecified, nor an IPv4 one of those mapped or
    embedded into IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return address_is_public(embedded)
        if address.teredo is not None:
            return False
    return address.is_global and not address.is_multicast


def addresses_resolve(target: Target, *, allow_private: bool) -> list[IpAddress]:
    """Every address the target's host resolves to, all checked; ``DestinationRefused``
    if it does not resolve or any of them is not public (unless ``allow_private``)."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DestinationRefused(f"The host {target.host!r} does not resolve ({exc}).") from None
    addresses: list[IpAddress] = []
    for info in infos:
        # A scope ("fe80::1%eth0") is not part of the address.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not allow_private:
        for address in addresses:
            if not address_is_public(address):
                raise DestinationRefused(
                    f"The host {target.host!r} resolves to {address}, which is not a public "
                    "address."
                )
    if not addresses:
        raise DestinationRefused(f"The host {target.host!r} does not resolve.")
    return addresses


def destination_check(url: str, *, allow_private: bool) -> Target:
    """``url``, checked as a delivery checks it (``DestinationRefused`` if refused)."""
    target = url_parse(url)
    addresses_resolve(target, allow_private=allow_private)
    return target


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signature_verify(
    *, secret: str, timestamp: str, body: bytes, header: str, tolerance: float, now: float
) -> bool:
    """What a receiver checks (docs/WEBHOOKS.md has the same in a few lines): the
    timestamp is within ``tolerance`` seconds of ``now``, and one of the header's
    space-separated signatures is the expected one."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance:
        return False
    expected = signature(secret=secret, timestamp=sent_at, body=body)
    return any(hmac.compare_digest(expected, given) for given in header.split())


def headers_signed(*, event_id: str, secret: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "OnAir-Webhook-Id": event_id,
        "OnAir-Webhook-Timestamp": str(timestamp),
        "OnAir-Webhook-Signature": signature(secret=secret, timestamp=timestamp, body=body),
    }


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool,
) -> Outcome:
    """POST ``body`` to ``url`` once; never raises (the reason is in the outcome)."""
    deadline = time.monotonic() + timeout
    try:
        target = url_parse(url)
        addresses = addresses_resolve(target, allow_private=allow_private)
        return _post(target, addresses, body=body, headers=headers, deadline=deadline)
    except DestinationRefused as exc:
        return Outcome(False, None, f"refused: {exc}")
    except TimeoutError:
        return Outcome(False, None, f"no answer within {timeout:g} s")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # ValueError: what the URL's parts may still hold that http.client refuses to send.
        return Outcome(False, None, _error_text(exc))


def _post(
    target: Target,
    addresses: list[IpAddress],
    *,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
) -> Outcome:
    connection = _connection(target, addresses, deadline=deadline)
    try:
        connection.request(
            "POST", target.path, body=body, headers={**headers, "Connection": "close"}
        )
        # The socket itself: the connection lets go of it once the answer is being read.
        sock = connection.sock
        _time_left(sock, deadline)
        response = connection.getresponse()
        text = _read_capped(response, sock, deadline=deadline)
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return Outcome(True, response.status, "")
    reason = f"HTTP {response.status}"
    if 300 <= response.status < 400:
        reason += " (redirects are not followed)"
    excerpt = " ".join(text.split())[:_ERROR_TEXT_CHARS]
    return Outcome(False, response.status, f"{reason}: {excerpt}" if excerpt else reason)


def _connection(
    target: Target, addresses: list[IpAddress], *, deadline: float
) -> http.client.HTTPConnection:
    remaining = max(deadline - time.monotonic(), 0.001)
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(
            target.host, target.port, timeout=remaining, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=remaining)

    def connect_checked(address: Any, timeout: Any = None, source: Any = None) -> socket.socket:
        # The host's name stays for Host and TLS (SNI, the certificate's check); the socket
        # goes to the addresses resolved and checked above, in their order.
        failure: OSError = OSError("no address to connect to")
        for checked in addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                return socket.create_connection((str(checked), target.port), left)
            except OSError as exc:
                failure = exc
        raise failure

    connection._create_connection = connect_checked  # type: ignore[attr-defined]
    return connection


def _time_left(sock: socket.socket | None, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if sock is not None:
        sock.settimeout(left)


def _read_capped(
    response: http.client.HTTPResponse, sock: socket.socket | None, *, deadline: float
) -> str:
    """Up to ``RESPONSE_READ_BYTES`` of the answer, within the deadline: an answer that
    drips is cut off, not waited for."""
    read = b""
    while len(read) < RESPONSE_READ_BYTES:
        try:
            _time_left(sock, deadline)
            chunk = response.read1(min(16384, RESPONSE_READ_BYTES - len(read)))
        except (TimeoutError, OSError, http.client.HTTPException):
            break
        if not chunk:
            break
        read += chunk
    return read.decode("utf-8", "replace")


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:_ERROR_TEXT_CHARS]
