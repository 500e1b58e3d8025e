"""Routers by broadcast id: the one object a process-wide gateway holds."""

from __future__ import annotations

import contextvars
from collections.abc import Callable

from sfu.events import RouterClosed, SfuEvent
from sfu.router import Router, RouterOptions


class RouterRegistry:
    """Creates, finds and closes the routers of one process.

    ``on_event``, if given, is subscribed to every event of every router it
    creates, which is how a gateway relays them. A router is forgotten by identity,
    not by id: a closing router's late ``RouterClosed`` never drops the next broadcast's
    router under the same id (which would leave its peers owned by no one).
    """

    def __init__(
        self,
        options: RouterOptions | None = None,
        on_event: Callable[[SfuEvent], None] | None = None,
    ) -> None:
        self.options = options or RouterOptions()
        self._on_event = on_event
        self._routers: dict[str, Router] = {}
        self._closing: dict[str, Router] = {}

    def __len__(self) -> int:
        return len(self._routers)

    def __contains__(self, broadcast_id: object) -> bool:
        return broadcast_id in self._routers

    def get(self, broadcast_id: str) -> Router | None:
        return self._routers.get(broadcast_id)

    @property
    def routers(self) -> tuple[Router, ...]:
        return tuple(self._routers.values())

    @property
    def routers_and_closing(self) -> tuple[Router, ...]:
        """The routers, and those whose ``close`` is under way (their peers are still
        closing: ``sfu.counters.totals`` counts them)."""
        closing = [r for r in self._closing.values() if r not in self._routers.values()]
        return (*self._routers.values(), *closing)

    def get_or_create(self, broadcast_id: str) -> Router:
        router = self._routers.get(broadcast_id)
        if router is None:
            # In a context of its own: the tasks it starts for itself outlive the request
            # that made it, and must not carry that request's context (its log ids).
            router = contextvars.Context().run(Router, self.options, router_id=broadcast_id)
            self.add(router)
        return router

    def add(self, router: Router) -> None:
        """Keep a router made elsewhere (an edge router of ``sfu.pipe``) under its id."""
        if router.id in self._routers:
            raise ValueError(f"a router for {router.id} exists already")
        if self._on_event is not None:
            router.events.on_any(self._on_event)
        router.events.on(RouterClosed, lambda event: self._forget(router))
        self._routers[router.id] = router

    def _forget(self, router: Router) -> None:
        if self._routers.get(router.id) is router:
            del self._routers[router.id]

    async def close(self, broadcast_id: str) -> None:
        """Close the broadcast's router; returns once it is closed, also when someone
        else's close of it was under way (so "closed" means its media has stopped)."""
        router = self._routers.pop(broadcast_id, None) or self._closing.get(broadcast_id)
        if router is None:
            return
        self._closing[broadcast_id] = router
        try:
            await router.close()
        finally:
            if self._closing.get(broadcast_id) is router:
                del self._closing[broadcast_id]

    async def close_all(self) -> None:
        for broadcast_id in list(self._routers):
            await self.close(broadcast_id)
