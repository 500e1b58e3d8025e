from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sfu import Router, RouterOptions
from testpeers import TestClients
from tests.sfu.forwarding_loop import options


@pytest.fixture
def router_options() -> RouterOptions:
    """What the ``router`` fixture is made with; a module overrides it to set its own.
    Its forwarding loop is this run's (``tests.sfu.forwarding_loop``)."""
    return options(stats_interval_seconds=0, publisher_grace_seconds=5.0)


@pytest.fixture
async def router(router_options: RouterOptions) -> AsyncIterator[Router]:
    router = Router(router_options)
    yield router
    await router.close()


@pytest.fixture
async def new_router() -> AsyncIterator[Callable[..., Router]]:
    """Makes routers with other options than the ``router`` fixture's (``RouterOptions``
    keywords; stats off; this run's forwarding loop unless given); closes them afterwards."""
    made: list[Router] = []

    def make(**fields: Any) -> Router:
        router = Router(options(**{"stats_interval_seconds": 0, **fields}))
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
