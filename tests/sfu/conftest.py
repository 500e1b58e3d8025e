from collections.abc import AsyncIterator

import pytest

from sfu import Router, RouterOptions
from testpeers import TestClients


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    router = Router(RouterOptions(stats_interval_seconds=0, publisher_grace_seconds=5.0))
    yield router
    await router.close()


@pytest.fixture
async def clients() -> AsyncIterator[TestClients]:
    clients = TestClients()
    yield clients
    await clients.close()
