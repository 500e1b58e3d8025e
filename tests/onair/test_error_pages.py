"""The error pages people meet (DEBUG off, as everywhere but ``DJANGO_DEBUG=1``): the site's
own, with its header and stylesheet; JSON under /api/."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.views import defaults

from onair.exception_handler import server_error

pytestmark = pytest.mark.django_db


def _looks_like_the_site(html: str) -> None:
    assert '<header class="site-header">' in html
    assert "/static/css/onair.css" in html
    assert "OnAir" in html


def test_a_mistyped_address_gets_the_sites_404(client: Client) -> None:
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    html = response.content.decode()
    _looks_like_the_site(html)
    assert "<h1" in html
    assert "This page does not exist." in html


def test_a_server_error_gets_the_sites_500() -> None:
    response = server_error(RequestFactory().get("/watch/x/"))

    assert response.status_code == 500
    html = response.content.decode()
    _looks_like_the_site(html)
    assert "Something went wrong on our side." in html


def test_an_api_server_error_is_json() -> None:
    response = server_error(RequestFactory().get("/api/v1/streams/"))

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"


def test_an_unknown_host_gets_the_sites_400(client: Client) -> None:
    response = client.get("/", HTTP_HOST="unknown.example")

    assert response.status_code == 400
    html = response.content.decode()
    _looks_like_the_site(html)
    assert "unknown.example" not in html


def test_a_refusal_gets_the_sites_403() -> None:
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    response = defaults.permission_denied(request, PermissionDenied())

    assert response.status_code == 403
    _looks_like_the_site(response.content.decode())


def test_a_form_without_its_csrf_token_gets_the_sites_page() -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post("/accounts/login/", {"username": "a", "password": "b"})

    assert response.status_code == 403
    html = response.content.decode()
    _looks_like_the_site(html)
    assert "This form has expired." in html
