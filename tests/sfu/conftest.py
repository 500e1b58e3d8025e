from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sfu import Router, RouterOptions
from testpeers import TestClients


@pytest.fixture
def router_options() -> RouterOptions:
    """What the ``router`` fixture is made with; a module overrides it to set its own."""
    return RouterOptions(stats_interval_seconds=0, publisher_grace_seconds=5.0)


@pytest.fixture
async def router(router_options: RouterOptions) -> AsyncIterator[Router]:
    router = Router(router_options)
    yield router
    await router.close()


@pytest.fixture
async def new_router() -> AsyncIterator[Callable[..., Router]]:
    """Makes routers with other options than the ``router`` fixture's (``RouterOptions``
    keywords; stats off); closes them afterwards."""
    made: list[Router] = []

    def make(**options: Any) -> Router:
        router = Router(RouterOptions(stats_interval_seconds=0, **options))
        made.append(router)
        return router

    yield make
    for router in made:
        await router.close()


@pytest.fixture
async def clients() -> AsyncIterator[TestClients]:
    clients = TestClients()
    yield clients
    await clients.close()
