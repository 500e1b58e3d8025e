"""A file from Django storage served with HTTP range requests (RFC 9110 §14), streamed.

Django's ``FileResponse`` answers every request with the whole file, and under ASGI (daphne
serves OnAir) any response whose content is a synchronous iterator is read into a list before
its first byte goes out (``StreamingHttpResponse.__aiter__``). This serves one byte range
(``bytes=a-b``, ``a-``, ``-n``) or the whole file as an asynchronous iterator, reading
``CHUNK_BYTES`` at a time in a worker thread. Several ranges in one header (which no media
element sends) get the whole file, as RFC 9110 allows.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Final

from asgiref.sync import sync_to_async
from django.core.files.storage import Storage
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from django.utils.http import http_date, parse_http_date_safe

CHUNK_BYTES: Final = 256 * 1024
# A byte position longer than this many digits is past the end of any file (and int() refuses
# strings over 4300 digits).
_MAX_DIGITS: Final = 18
_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)


class RangeNotSatisfiable(Exception):
    """No byte of the range asked for is in the file (answered with 416)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # the last byte, inclusive as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_range(header: str, *, size: int) -> ByteRange | None:
    """The one byte range ``header`` asks of a ``size``-byte file, or None where the header is
    to be ignored (another unit, several ranges, a malformed or backwards range: the whole
    file is sent). Raises ``RangeNotSatisfiable`` when the range starts past the end, or asks
    for the last 0 bytes (or any of an empty file)."""
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = _position(first)
        if last and _position(last) < start:
            return None
        if start >= size:
            raise RangeNotSatisfiable
        end = min(_position(last), size - 1) if last else size - 1
        return ByteRange(start, end)
    if not last:
        return None
    suffix = _position(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable
    return ByteRange(max(0, size - suffix), size - 1)


@dataclass(frozen=True, slots=True)
class Validators:
    """What tells one version of a file from another: a strong ETag (quoted) and the time
    it was last written."""

    etag: str
    last_modified: datetime

    @property
    def timestamp(self) -> int:
        return int(self.last_modified.timestamp())

    def apply(self, response: HttpResponseBase) -> None:
        response["ETag"] = self.etag
        response["Last-Modified"] = http_date(self.timestamp)

    def match_if_range(self, value: str) -> bool:
        """Whether an ``If-Range`` names this version (strong comparison; a date must be the
        exact Last-Modified)."""
        value = value.strip()
        if value.startswith(('"', "W/")):
            return value == self.etag
        return parse_http_date_safe(value) == self.timestamp


class RangedFileResponse(StreamingHttpResponse):
    """Streams ``length`` bytes of ``file`` from ``start``; closes the file when done."""

    def __init__(self, file: IO[bytes], *, start: int, length: int, status: int) -> None:
        super().__init__(_chunks(file, start=start, length=length), status=status)
        self._file = file
        self["Content-Length"] = str(length)

    def close(self) -> None:
        self._file.close()
        super().close()


async def _chunks(file: IO[bytes], *, start: int, length: int) -> AsyncIterator[bytes]:
    read = sync_to_async(file.read, thread_sensitive=False)
    try:
        if start:
            await sync_to_async(file.seek, thread_sensitive=False)(start)
        left = length
        while left > 0:
            chunk = await read(min(CHUNK_BYTES, left))
            if not chunk:
                # Shorter than its size said (truncated meanwhile): the client sees a body
                # shorter than Content-Length, as for a dropped connection.
                return
            left -= len(chunk)
            yield chunk
    finally:
        await sync_to_async(file.close, thread_sensitive=False)()


def ranged_file_response(
    request: HttpRequest,
    *,
    storage: Storage,
    name: str,
    content_type: str,
    validators: Validators,
) -> HttpResponseBase:
    """Answer a GET or HEAD for the file ``name`` of ``storage``: 200 with all of it, 206
    with the range asked for, 416 for a range past its end, 304/412 for the conditional
    headers. Raises ``OSError`` (``FileNotFoundError``) when the storage has no such file."""
    conditional = get_conditional_response(
        request, etag=validators.etag, last_modified=validators.timestamp
    )
    if conditional is not None:
        validators.apply(conditional)
        return conditional
    file = storage.open(name, "rb")
    try:
        size = file.size
        wanted: ByteRange | None = None
        header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if header is not None and (if_range is None or validators.match_if_range(if_range)):
            wanted = parse_range(header, size=size)
    except RangeNotSatisfiable:
        file.close()
        refused = HttpResponse(status=416)
        refused["Content-Range"] = f"bytes */{size}"
        refused["Accept-Ranges"] = "bytes"
        validators.apply(refused)
        return refused
    except BaseException:
        file.close()
        raise
    if request.method == "HEAD":
        file.close()
        response: HttpResponseBase = HttpResponse(status=206 if wanted else 200)
        response["Content-Length"] = str(wanted.length if wanted else size)
    elif wanted is None:
        response = RangedFileResponse(file, start=0, length=size, status=200)
    else:
        response = RangedFileResponse(file, start=wanted.start, length=wanted.length, status=206)
    if wanted is not None:
        response["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{size}"
    response["Content-Type"] = content_type
    response["Accept-Ranges"] = "bytes"
    validators.apply(response)
    return response
