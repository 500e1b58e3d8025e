"""onair.ranged_response: byte ranges parsed as RFC 9110 says, answered with 206/416/304, and
the file read a chunk at a time as the response is sent, never whole."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import pytest
from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.test import RequestFactory
from django.utils.http import http_date

from onair.ranged_response import (
    CHUNK_BYTES,
    ByteRange,
    RangeNotSatisfiable,
    Validators,
    parse_range,
    ranged_file_response,
)

SIZE = 3 * CHUNK_BYTES + 12_345
DATA = bytes(i * 7 % 251 for i in range(SIZE))
VALIDATORS = Validators(etag='"rec-1"', last_modified=datetime(2026, 12, 5, 7, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # a suffix longer than the file: all of it
        ("bytes=990-5000", ByteRange(990, 999)),  # an end past the file's: its last byte
        ("bytes=0-" + "9" * 40, ByteRange(0, 999)),
        ("bytes=999-999", ByteRange(999, 999)),
        (" Bytes=1-2 ", ByteRange(1, 2)),
        # ignored, the whole file is sent
        ("items=0-1", None),
        ("bytes=0-1,5-6", None),
        ("bytes=5-2", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes 0-1", None),
        ("", None),
    ],
)
def test_parse_range(header: str, expected: ByteRange | None) -> None:
    assert parse_range(header, size=1000) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", 1000),
        ("bytes=1000-2000", 1000),
        ("bytes=" + "9" * 40 + "-", 1000),
        ("bytes=-0", 1000),
        ("bytes=0-", 0),
        ("bytes=-10", 0),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size=size)


class CountingStorage(FileSystemStorage):
    """A file system storage whose files count what is read of them."""

    def __init__(self, location: Path) -> None:
        super().__init__(location=location)
        self.reads: list[int] = []
        self.opened: list[File[Any]] = []

    def open(self, name: str, mode: str = "rb") -> File[Any]:
        file = super().open(name, mode)
        assert file.file is not None
        raw: IO[Any] = file.file
        reads = self.reads

        class Counting:
            def __getattr__(self, attr: str) -> Any:
                return getattr(raw, attr)

            def read(self, size: int = -1) -> bytes:
                data = raw.read(size)
                reads.append(len(data))
                return data

        file.file = cast(IO[Any], Counting())
        self.opened.append(file)
        return file


@pytest.fixture
def storage(tmp_path: Path) -> CountingStorage:
    (tmp_path / "rec.webm").write_bytes(DATA)
    return CountingStorage(tmp_path)


def _get(storage: CountingStorage, method: str = "get", **headers: str) -> HttpResponseBase:
    request: HttpRequest = getattr(RequestFactory(), method)("/file", headers=headers)
    return ranged_file_response(
        request,
        storage=storage,
        name="rec.webm",
        content_type="video/webm",
        validators=VALIDATORS,
    )


async def _body(response: HttpResponseBase) -> bytes:
    """The body as the ASGI handler takes it (``aiter(response)``)."""
    if isinstance(response, HttpResponse):
        return response.content
    assert isinstance(response, StreamingHttpResponse)
    return b"".join([part async for part in response])


def _closed(storage: CountingStorage) -> bool:
    return all(file.closed for file in storage.opened)


async def test_whole_file_without_range(storage: CountingStorage) -> None:
    response = _get(storage)

    assert response.status_code == 200
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Type"] == "video/webm"
    assert response["Content-Length"] == str(SIZE)
    assert "Content-Range" not in response
    assert response["ETag"] == '"rec-1"'
    assert response["Last-Modified"] == http_date(VALIDATORS.timestamp)
    assert await _body(response) == DATA
    assert _closed(storage)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-1", 0, 1),
        (
            f"bytes={CHUNK_BYTES - 10}-{2 * CHUNK_BYTES + 10}",
            CHUNK_BYTES - 10,
            2 * CHUNK_BYTES + 10,
        ),
        (f"bytes={SIZE - 100}-", SIZE - 100, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        (f"bytes=10-{SIZE * 2}", 10, SIZE - 1),
    ],
)
async def test_a_range_is_206_with_those_bytes(
    storage: CountingStorage, header: str, start: int, end: int
) -> None:
    response = _get(storage, Range=header)

    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert response["Content-Length"] == str(end - start + 1)
    assert response["Accept-Ranges"] == "bytes"
    assert await _body(response) == DATA[start : end + 1]
    # only that range was read
    assert sum(storage.reads) == end - start + 1
    assert _closed(storage)


async def test_past_the_end_is_416(storage: CountingStorage) -> None:
    response = _get(storage, Range=f"bytes={SIZE}-")

    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{SIZE}"
    assert await _body(response) == b""
    assert storage.reads == []
    assert _closed(storage)


async def test_several_ranges_get_the_whole_file(storage: CountingStorage) -> None:
    response = _get(storage, Range="bytes=0-1,10-20")

    assert response.status_code == 200
    assert await _body(response) == DATA


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ('"rec-1"', 206),
        (http_date(VALIDATORS.timestamp), 206),
        ('"rec-0"', 200),  # changed since: the whole new file
        ('W/"rec-1"', 200),  # a weak validator never matches
        (http_date(VALIDATORS.timestamp - 1), 200),
        ("yesterday", 200),
    ],
)
async def test_if_range(storage: CountingStorage, if_range: str, status: int) -> None:
    response = _get(storage, Range="bytes=0-9", **{"If-Range": if_range})

    assert response.status_code == status
    assert len(await _body(response)) == (10 if status == 206 else SIZE)


async def test_conditional_get_is_304(storage: CountingStorage) -> None:
    for headers in (
        {"If-None-Match": '"rec-1"'},
        {"If-Modified-Since": http_date(VALIDATORS.timestamp)},
    ):
        response = _get(storage, Range="bytes=0-9", **headers)

        assert response.status_code == 304
        assert response["ETag"] == '"rec-1"'
    assert storage.opened == []


async def test_head_sends_no_body(storage: CountingStorage) -> None:
    whole = _get(storage, "head")
    part = _get(storage, "head", Range="bytes=100-199")

    assert (whole.status_code, whole["Content-Length"]) == (200, str(SIZE))
    assert (part.status_code, part["Content-Length"]) == (206, "100")
    assert part["Content-Range"] == f"bytes 100-199/{SIZE}"
    assert await _body(whole) == b""
    assert await _body(part) == b""
    assert storage.reads == []
    assert _closed(storage)


async def test_the_file_is_read_as_it_is_sent(storage: CountingStorage) -> None:
    """Each chunk is read when the server takes it: a synchronous iterator would have been
    read whole before the first byte went out."""
    response = _get(storage)
    assert isinstance(response, StreamingHttpResponse)
    sent = cast(AsyncGenerator[bytes, None], aiter(response))

    first = await anext(sent)

    assert len(first) == CHUNK_BYTES
    assert storage.reads == [CHUNK_BYTES]
    await anext(sent)
    assert storage.reads == [CHUNK_BYTES, CHUNK_BYTES]
    await sent.aclose()
    response.close()
    assert _closed(storage)


async def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _get(CountingStorage(tmp_path))
