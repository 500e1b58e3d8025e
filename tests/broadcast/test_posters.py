"""Stream posters: kept through the "thumbnails" storage, served to whoever may watch the
stream (and to nobody else, who cannot tell a private stream from a missing one), shown on
the home page's live cards and as the watch page's poster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

from broadcast.models import Stream
from broadcast.services import stream_delete, stream_end, stream_go_live, stream_poster_set
from tests.signaling.test_private_streams import normalized

pytestmark = pytest.mark.django_db

JPEG = b"\xff\xd8\xff\xe0poster one\xff\xd9"
JPEG_2 = b"\xff\xd8\xff\xe0poster two\xff\xd9"


@pytest.fixture(autouse=True)
def thumbnails(tmp_path: Path) -> Iterator[Path]:
    storages = {
        **settings.STORAGES,
        "thumbnails": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path},
        },
    }
    with override_settings(STORAGES=storages):
        yield tmp_path


@pytest.fixture
def live(make_stream: Callable[..., tuple[Stream, object]]) -> Callable[..., Stream]:
    def make(**kwargs: object) -> Stream:
        stream, _ = make_stream(**kwargs)
        return stream_go_live(stream=stream)

    return make


def _client(user: User | None = None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_new_poster_replaces_the_one_before_and_its_file(
    live: Callable[..., Stream], thumbnails: Path
) -> None:
    stream = live()
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    stream.refresh_from_db()
    first_url = stream.poster_url
    assert [p.read_bytes() for p in _files(thumbnails)] == [JPEG]

    stream_poster_set(stream_id=stream.pk, jpeg=JPEG_2)
    stream.refresh_from_db()

    assert [p.read_bytes() for p in _files(thumbnails)] == [JPEG_2]
    assert stream.poster_url.startswith(f"/streams/{stream.slug}/poster.jpg?v=")
    assert stream.poster_url != first_url
    response = _client().get(stream.poster_url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert response.content == JPEG_2


def test_a_poster_for_a_stream_deleted_meanwhile_is_not_kept(
    make_stream: Callable[..., tuple[Stream, object]], thumbnails: Path
) -> None:
    stream, _ = make_stream()
    stream_id = stream.pk
    stream_delete(stream=stream)
    assert stream_poster_set(stream_id=stream_id, jpeg=JPEG) is None
    assert _files(thumbnails) == []


def test_deleting_a_stream_deletes_its_poster(
    live: Callable[..., Stream], thumbnails: Path, django_capture_on_commit_callbacks: Callable
) -> None:
    stream = live()
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    stream.refresh_from_db()
    stream_end(stream=stream, reason=Stream.EndReason.OWNER)
    with django_capture_on_commit_callbacks(execute=True):
        stream_delete(stream=stream)
    assert _files(thumbnails) == []


@pytest.mark.parametrize("visibility", [Stream.Visibility.PUBLIC, Stream.Visibility.UNLISTED])
def test_anyone_gets_the_poster_of_a_stream_they_can_watch(
    live: Callable[..., Stream], visibility: str
) -> None:
    stream = live(visibility=visibility)
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    response = _client().get(f"/streams/{stream.slug}/poster.jpg")
    assert response.status_code == 200
    assert response.content == JPEG
    head = _client().head(f"/streams/{stream.slug}/poster.jpg")
    assert head.status_code == 200
    assert head["Content-Type"] == "image/jpeg"
    assert _client().post(f"/streams/{stream.slug}/poster.jpg").status_code == 405


def test_a_private_stream_s_poster_is_its_owner_s_and_staff_s_and_missing_for_others(
    live: Callable[..., Stream], user: User, other_user: User, staff_user: User
) -> None:
    stream = live(visibility=Stream.Visibility.PRIVATE)
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    stream.refresh_from_db()

    for viewer in (user, staff_user):
        response = _client(viewer).get(stream.poster_url)
        assert response.status_code == 200
        assert response.content == JPEG
        assert "private" in response["Cache-Control"]
    for stranger in (_client(other_user), _client()):
        response = stranger.get(stream.poster_url)
        missing = stranger.get(stream.poster_url.replace(stream.slug, "no-such-stream"))
        assert response.status_code == missing.status_code == 404
        assert normalized(response.content, stream.slug) == normalized(
            missing.content, "no-such-stream"
        )


def test_no_poster_yet_is_not_found(live: Callable[..., Stream]) -> None:
    stream = live()
    assert stream.poster_url == ""
    assert _client().get(f"/streams/{stream.slug}/poster.jpg").status_code == 404


def test_a_poster_whose_file_is_gone_is_not_found(
    live: Callable[..., Stream], thumbnails: Path
) -> None:
    stream = live()
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    for path in _files(thumbnails):
        path.unlink()
    assert _client().get(f"/streams/{stream.slug}/poster.jpg").status_code == 404


def test_the_versioned_address_is_cached_for_good_any_other_is_revalidated(
    live: Callable[..., Stream],
) -> None:
    stream = live()
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    stream.refresh_from_db()
    client = _client()

    versioned = client.get(stream.poster_url)
    assert "immutable" in versioned["Cache-Control"]
    assert "max-age=31536000" in versioned["Cache-Control"]
    assert "public" in versioned["Cache-Control"]

    plain = client.get(f"/streams/{stream.slug}/poster.jpg")
    assert "no-cache" in plain["Cache-Control"]
    etag = plain["ETag"]
    assert etag == f'"{stream.poster_version}"'
    again = client.get(f"/streams/{stream.slug}/poster.jpg", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""

    stream_poster_set(stream_id=stream.pk, jpeg=JPEG_2)
    changed = client.get(f"/streams/{stream.slug}/poster.jpg", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.content == JPEG_2


def test_the_home_page_card_and_the_watch_page_show_the_live_poster(
    live: Callable[..., Stream],
) -> None:
    stream = live(title="With a poster")
    bare = live(title="Without one")
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    stream.refresh_from_db()
    url = stream.poster_url
    assert url

    home = _client().get("/").content.decode()
    card = home.split(f'data-slug="{stream.slug}"')[1].split("</li>")[0]
    assert f'<img class="stream-poster" src="{url}"' in card.replace("&amp;", "&")
    bare_card = home.split(f'data-slug="{bare.slug}"')[1].split("</li>")[0]
    assert "stream-poster" not in bare_card

    watch = _client().get(f"/watch/{stream.slug}/").content.decode()
    assert f'poster="{url}"' in watch.replace("&amp;", "&")
    assert "poster=" not in _client().get(f"/watch/{bare.slug}/").content.decode()


def test_a_poster_of_an_earlier_broadcast_is_not_shown_as_the_new_one_s(
    live: Callable[..., Stream],
) -> None:
    stream = live()
    stream_poster_set(stream_id=stream.pk, jpeg=JPEG)
    stream.refresh_from_db()
    stream_end(stream=stream, reason=Stream.EndReason.OWNER)
    stream.refresh_from_db()
    assert stream.poster_url == ""  # not live
    stream_go_live(stream=stream)
    stream.refresh_from_db()
    assert stream.started_at is not None
    assert stream.poster_taken_at is not None
    assert stream.poster_taken_at < stream.started_at <= timezone.now()
    assert stream.poster_url == ""
    assert "stream-poster" not in _client().get("/").content.decode()
