"""Fixtures of the webhook tests: settings that let deliveries reach this machine and retry
within a test's time, and an endpoint of ``user``'s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings

from webhooks.models import Event
from webhooks.services import IssuedEndpoint, webhook_endpoint_create

# Deliveries to loopback, retried within a test's time.
FAST = {
    "WEBHOOK_ALLOW_PRIVATE": True,
    "WEBHOOK_RETRY_FIRST_SECONDS": 0.2,
    "WEBHOOK_RETRY_MAX_SECONDS": 0.5,
    "WEBHOOK_POLL_SECONDS": 0.2,
    "WEBHOOK_TIMEOUT_SECONDS": 2,
}


def onair(**overrides: Any) -> Any:
    return override_settings(ONAIR={**settings.ONAIR, **overrides})


@pytest.fixture
def fast_webhooks() -> Iterator[None]:
    with onair(**FAST):
        yield


@pytest.fixture
def endpoint(user: User, fast_webhooks: None) -> IssuedEndpoint:
    return webhook_endpoint_create(
        owner=user, url="http://127.0.0.1:9/hooks", events=list(Event.values)
    )
