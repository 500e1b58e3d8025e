"""Failed logins are throttled per client address and per username, on the site's login
form and on the API's token endpoint: 429 with Retry-After, the one error body (API) or a
form error (site), and the right password refused too until the window ends."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token/"
LOGIN = "/accounts/login/"


def token_attempt(password: str, *, username: str = "alice", address: str = "192.0.2.1") -> int:
    response = APIClient().post(
        TOKEN, {"username": username, "password": password}, REMOTE_ADDR=address
    )
    return response.status_code


def test_fifty_wrong_passwords_on_the_api_get_429(user: User) -> None:
    statuses = [token_attempt(f"wrong-{i}") for i in range(50)]
    assert statuses[:10] == [400] * 10  # the per-username limit, 10 by default
    assert set(statuses[10:]) == {429}

    response = APIClient().post(
        TOKEN, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="192.0.2.1"
    )
    assert response.status_code == 429  # even the right password, until the window ends
    assert 0 < int(response["Retry-After"]) <= 900
    error = response.json()["error"]
    assert error["status"] == 429
    assert error["code"] == "throttled"
    assert error["message"]
    assert "token" not in response.json()


@override_settings(ONAIR={"LOGIN_FAILURES_PER_ADDRESS": 5, "LOGIN_FAILURES_PER_USERNAME": 100})
def test_one_address_trying_many_usernames_is_throttled(user: User, other_user: User) -> None:
    statuses = [token_attempt("wrong", username=f"user{i}") for i in range(8)]
    assert statuses == [400] * 5 + [429] * 3
    # Another address is not affected, and logs in.
    assert token_attempt(PASSWORD, address="198.51.100.7") == 200


@override_settings(ONAIR={"LOGIN_FAILURES_PER_ADDRESS": 100, "LOGIN_FAILURES_PER_USERNAME": 3})
def test_one_username_tried_from_many_addresses_is_throttled(user: User, other_user: User) -> None:
    statuses = [token_attempt("wrong", address=f"203.0.113.{i}") for i in range(5)]
    assert statuses == [400] * 3 + [429] * 2
    # Only that username: another user logs in from the same addresses.
    assert token_attempt(PASSWORD, username="bob", address="203.0.113.1") == 200


@override_settings(ONAIR={"LOGIN_FAILURES_PER_ADDRESS": 3, "LOGIN_FAILURES_PER_USERNAME": 100})
def test_x_forwarded_for_does_not_choose_the_bucket(user: User) -> None:
    for i in range(3):
        response = APIClient().post(
            TOKEN,
            {"username": "alice", "password": "wrong"},
            REMOTE_ADDR="192.0.2.9",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        )
        assert response.status_code == 400
    response = APIClient().post(
        TOKEN,
        {"username": "alice", "password": "wrong"},
        REMOTE_ADDR="192.0.2.9",
        HTTP_X_FORWARDED_FOR="10.9.9.9",
    )
    assert response.status_code == 429


def test_successful_logins_are_not_counted(user: User) -> None:
    for _ in range(30):
        assert token_attempt(PASSWORD) == 200


def test_fifty_wrong_passwords_on_the_login_form_get_429(user: User) -> None:
    client = Client(REMOTE_ADDR="192.0.2.1")
    statuses = [
        client.post(LOGIN, {"username": "alice", "password": f"wrong-{i}"}).status_code
        for i in range(50)
    ]
    assert statuses[:10] == [200] * 10  # Django's form error, on the page
    assert set(statuses[10:]) == {429}

    response = client.post(LOGIN, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 900
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session  # not logged in

    # From elsewhere, another account logs in as usual.
    other = Client(REMOTE_ADDR="198.51.100.7")
    User.objects.create_user("carol", password=PASSWORD)
    assert other.post(LOGIN, {"username": "carol", "password": PASSWORD}).status_code == 302
