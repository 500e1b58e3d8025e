"""A live stream's poster from its own video: the SFU's thumbnails (``sfu.thumbnail``)
through the in-process gateway, stored as the stream's poster and served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import av
import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import AsyncClient, override_settings

from broadcast.models import Stream
from broadcast.services import IssuedKey, stream_go_live
from sfu import ThumbnailTaken
from signaling.gateway import gateway
from testpeers import TestClients, TestPublisher, wait_until_awaited

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

JPEG = b"\xff\xd8\xff\xe0a poster\xff\xd9"


@pytest.fixture(autouse=True)
def thumbnails(tmp_path: Path) -> Iterator[Path]:
    storages = {
        **settings.STORAGES,
        "thumbnails": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path},
        },
    }
    onair = {**settings.ONAIR, "THUMBNAIL_SECONDS": 0.3}
    with override_settings(STORAGES=storages, ONAIR=onair):
        yield tmp_path


@pytest.fixture
async def clients() -> AsyncIterator[TestClients]:
    clients = TestClients()
    yield clients
    await clients.close()
    await gateway.close_all()


def _files(root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in root.rglob("*.jpg")]


async def _has_poster(stream: Stream, other_than: str = "") -> bool:
    await database_sync_to_async(stream.refresh_from_db)()
    return bool(stream.poster) and stream.poster != other_than


async def test_a_thumbnail_the_sfu_takes_becomes_the_stream_s_poster(
    stream_parts: tuple[Stream, IssuedKey], thumbnails: Path
) -> None:
    stream, _ = stream_parts
    await database_sync_to_async(stream_go_live)(stream=stream)
    router = gateway.routers().get_or_create(str(stream.pk))
    try:
        router.events.emit(ThumbnailTaken(router_id=router.id, jpeg=JPEG, width=2, height=2))
        assert await wait_until_awaited(lambda: _has_poster(stream), within=10)
        response = await AsyncClient().get(stream.poster_url)
        assert response.status_code == 200
        assert response.content == JPEG
        assert await asyncio.to_thread(_files, thumbnails) == [stream.poster]
    finally:
        await gateway.close_all()


async def test_a_live_stream_s_video_becomes_its_poster(
    stream_parts: tuple[Stream, IssuedKey], clients: TestClients, thumbnails: Path
) -> None:
    stream, _ = stream_parts
    publisher = TestPublisher()
    clients.publishers.append(publisher)
    offer = await publisher.create_offer()
    result = await gateway.publish(stream_id=str(stream.pk), offer_sdp=offer)
    await publisher.accept_answer(result.answer_sdp)
    await database_sync_to_async(stream_go_live)(stream=stream)

    # the broadcast's first keyframe
    assert await wait_until_awaited(lambda: _has_poster(stream), within=20)
    first = stream.poster
    response = await AsyncClient().get(stream.poster_url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    decoder = av.CodecContext.create("mjpeg", "r")
    (picture,) = [*decoder.decode(av.Packet(response.content)), *decoder.decode(None)]
    assert (picture.width, picture.height) == (320, 240)

    # a viewer joining brings a keyframe: a new poster, the old file gone
    router = gateway.router(str(stream.pk))
    assert router is not None
    await clients.subscribe(router, decode=False)
    assert await wait_until_awaited(lambda: _has_poster(stream, other_than=first), within=20)
    assert await asyncio.to_thread(_files, thumbnails) == [stream.poster]
