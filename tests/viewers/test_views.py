"""The watch page's share panel and the embeddable player: what they hold, and which page
other sites may frame (only /embed/<slug>/)."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import User
from django.test import Client

from broadcast.models import Stream
from tests.conftest import StreamFactory

pytestmark = pytest.mark.django_db


def test_watch_page_offers_the_link_and_an_embed_code(
    client: Client, make_stream: StreamFactory
) -> None:
    stream, _ = make_stream(title='Quotes " and <tags>')
    page = client.get(f"/watch/{stream.slug}/").content.decode()
    assert f'value="http://testserver/watch/{stream.slug}/"' in page
    # The code as the textarea shows it: one <iframe>, its title escaped inside it.
    start = page.index('<textarea id="share-embed"')
    code = html.unescape(page[page.index(">", start) + 1 : page.index("</textarea>", start)])
    assert code.startswith(f'<iframe src="http://testserver/embed/{stream.slug}/"')
    assert 'allow="autoplay; fullscreen; picture-in-picture"' in code
    assert 'title="Quotes &quot; and &lt;tags&gt;"' in code
    assert code.count("<") == 2  # <iframe …></iframe>, nothing the title could add


def test_only_the_embed_page_may_be_framed(
    client: Client, user: User, make_stream: StreamFactory
) -> None:
    stream, _ = make_stream()
    embed = client.get(f"/embed/{stream.slug}/")
    assert embed.status_code == 200
    assert embed["Content-Security-Policy"] == "frame-ancestors *"
    assert "X-Frame-Options" not in embed
    page = embed.content.decode()
    assert 'id="player"' in page
    assert "site-header" not in page  # the player only
    assert "site-footer" not in page

    client.force_login(user)
    for path in (
        "/",
        f"/watch/{stream.slug}/",
        f"/studio/{stream.slug}/",
        "/streams/",
        "/embed/no-such-stream/",
        "/accounts/login/",
    ):
        response = client.get(path)
        assert response["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors *" not in response.get("Content-Security-Policy", ""), path


def test_a_private_streams_embed_is_its_owners_alone(
    client: Client, user: User, make_stream: StreamFactory
) -> None:
    stream, _ = make_stream(visibility=Stream.Visibility.PRIVATE)
    hidden = client.get(f"/embed/{stream.slug}/")
    missing = client.get("/embed/no-such-stream/")
    assert (hidden.status_code, hidden["X-Frame-Options"]) == (404, "DENY")
    assert hidden.content.decode().replace(stream.slug, "x") == missing.content.decode().replace(
        "no-such-stream", "x"
    )
    client.force_login(user)
    assert client.get(f"/embed/{stream.slug}/").status_code == 200
