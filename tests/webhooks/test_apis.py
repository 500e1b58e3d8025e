"""The webhooks REST API: one's own endpoints only, the secret shown once, the test event,
the delivery log; and the admin's endpoint form, test action and delivery log."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import StreamFactory
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_webhooks")]

LIST = "/api/v1/webhooks/"


def create(client: APIClient, **fields: object) -> dict:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["stream.live", "stream.ended"], **fields}
    response = client.post(LIST, body, format="json")
    assert response.status_code == 201, response.json()
    return dict(response.json())


def test_create_shows_the_secret_once_and_lists_it_masked(
    user: User, client_for: Callable[[User], APIClient]
) -> None:
    client = client_for(user)
    created = create(client, description="CI")
    assert created["secret"].startswith("whsec_")
    assert len(created["secret"]) > 40
    assert created["events"] == ["stream.live", "stream.ended"]
    assert created["active"] is True

    listed = client.get(LIST).json()
    assert listed["count"] == 1
    shown = listed["results"][0]
    assert shown["secret"] != created["secret"]
    assert created["secret"] not in str(listed)
    assert client.get(f"{LIST}{created['id']}/").json()["secret"] == shown["secret"]
    assert WebhookEndpoint.objects.get().secret == created["secret"]


def test_update_rotate_and_delete(user: User, client_for: Callable[[User], APIClient]) -> None:
    client = client_for(user)
    created = create(client)
    url = f"{LIST}{created['id']}/"
    changed = client.patch(url, {"events": ["viewer.peak"], "active": False}, format="json")
    assert changed.status_code == 200
    assert (changed.json()["events"], changed.json()["active"]) == (["viewer.peak"], False)

    rotated = client.post(f"{url}rotate-secret/")
    assert rotated.status_code == 201
    assert rotated.json()["secret"] not in (created["secret"], "")
    assert WebhookEndpoint.objects.get().secret == rotated.json()["secret"]

    assert client.delete(url).status_code == 204
    assert not WebhookEndpoint.objects.exists()


def test_bad_input_is_a_clear_400(user: User, client_for: Callable[[User], APIClient]) -> None:
    client = client_for(user)
    for body in (
        {"url": "http://127.0.0.1:9/", "events": []},
        {"url": "http://127.0.0.1:9/", "events": ["stream.exploded"]},
        {"url": "gopher://example.com/", "events": ["stream.live"]},
        {"url": "not a url", "events": ["stream.live"]},
        {"events": ["stream.live"]},
    ):
        response = client.post(LIST, body, format="json")
        assert response.status_code == 400, body
        assert response.json()["error"]
    assert not WebhookEndpoint.objects.exists()


def test_private_destinations_are_refused_by_default(
    user: User, client_for: Callable[[User], APIClient], settings: object
) -> None:
    from tests.webhooks.conftest import onair

    with onair(WEBHOOK_ALLOW_PRIVATE=False):
        response = client_for(user).post(
            LIST, {"url": "http://169.254.169.254/", "events": ["stream.live"]}, format="json"
        )
    assert response.status_code == 400
    assert "not a public address" in str(response.json())


def test_others_endpoints_are_not_found_and_anonymous_is_refused(
    user: User, other_user: User, client_for: Callable[[User], APIClient], api_client: APIClient
) -> None:
    created = create(client_for(user))
    other = client_for(other_user)
    for path in ("", "deliveries/", "test/", "rotate-secret/"):
        method = other.get if path in ("", "deliveries/") else other.post
        assert method(f"{LIST}{created['id']}/{path}").status_code == 404
    assert other.get(LIST).json()["count"] == 0
    assert api_client.get(LIST).status_code in (401, 403)


def test_test_event_and_the_delivery_log(
    user: User, client_for: Callable[[User], APIClient], make_stream: StreamFactory
) -> None:
    client = client_for(user)
    created = create(client)
    response = client.post(f"{LIST}{created['id']}/test/")
    assert response.status_code == 202
    assert (response.json()["event_type"], response.json()["status"]) == ("webhook.test", "pending")

    log = client.get(f"{LIST}{created['id']}/deliveries/").json()
    assert [item["event_type"] for item in log["results"]] == ["webhook.test"]
    failed = client.get(f"{LIST}{created['id']}/deliveries/", {"status": "failed"}).json()
    assert failed["count"] == 0
    assert client.get(f"{LIST}{created['id']}/deliveries/", {"status": "x"}).status_code == 400

    client.patch(f"{LIST}{created['id']}/", {"active": False}, format="json")
    refused = client.post(f"{LIST}{created['id']}/test/")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "endpoint_inactive"


def test_the_api_root_lists_webhooks(api_client: APIClient) -> None:
    assert api_client.get("/api/v1/").json()["webhooks"].endswith("/api/v1/webhooks/")


@pytest.fixture
def admin_client(superuser: User) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


def test_admin_adds_an_endpoint_sends_a_test_event_and_shows_the_log(
    admin_client: Client, user: User
) -> None:
    response = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {
            "owner": user.pk,
            "url": "http://127.0.0.1:9/h",
            "events": ["stream.live"],
            "active": "on",
        },
        follow=True,
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret in response.content.decode()  # shown this once

    refused = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"owner": user.pk, "url": "ftp://example.com/", "events": ["stream.live"]},
    )
    assert refused.status_code == 200  # the form again, with the reason
    assert "Use an http:// or https:// URL." in refused.content.decode()

    page = admin_client.get("/admin/webhooks/webhookendpoint/").content.decode()
    assert endpoint.secret not in page
    admin_client.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "send_test_event", "_selected_action": [endpoint.pk]},
    )
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.event_type == "webhook.test"

    log = admin_client.get("/admin/webhooks/webhookdelivery/", {"status__exact": "pending"})
    assert log.status_code == 200
    assert log.context["cl"].result_count == 1
    assert (
        admin_client.get(f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/").status_code
        == 200
    )
