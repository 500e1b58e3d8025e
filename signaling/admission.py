"""Joins admitted at the rate the process sustains: a fair queue in front of new viewers.

A popular broadcast's audience arrives in the same minute. A viewer's join (its SFU peer
connection made and offered, its ICE and DTLS handshakes, its count in the database) costs
the process's one core milliseconds of CPU that forwarding to the viewers already watching
needs too. So each process admits at most ``JOIN_CONCURRENCY`` joins at a time, at most
half of them from one client address; the others wait in the order they came, at most
``JOIN_QUEUE_MAX`` of them, each at most ``JOIN_QUEUE_SECONDS``. Joins start as fast as
earlier ones finish: the rate follows what the process sustains, and the share of the loop
joins take stays bounded.

An admitted join holds its place until its viewer's connection is up or gone (``settle``,
from the gateway's events), ``HOLD_SECONDS`` after its admission or
``ANSWERED_HOLD_SECONDS`` after its offer/answer exchange, whichever comes first: a client
that never answers or never connects cannot keep a place. In cluster mode the peers are in
the ``runsfu`` workers, so a daphne process's join is only its signaling: the place is
given back once the viewer is made.

Refusals are ``503`` (``ServiceUnavailableError``, with ``Retry-After``):
``join_queue_full`` when the queue is at its cap, ``join_queue_timeout`` when a join waited
its deadline out. The watch page's consumer waits without blocking its socket (it hears
``queued`` once); a WHEP ``POST`` waits in its request (docs/SIGNALING.md,
docs/WHIP_WHEP.md).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from onair.conf import cluster_mode, onair_settings
from onair.exceptions import ServiceUnavailableError

HOLD_SECONDS = 5.0  # an admitted join's place, at most (a local join is up in < 0.5 s)
# ... and from its offer/answer exchange on (``JoinTicket.bind``): what is left is the
# client's ICE and DTLS, little of the process's CPU, and a client that made its offer or
# got one and never connects (a flood from a few addresses) must not keep places for long
ANSWERED_HOLD_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5

Queued = Callable[[int], Awaitable[None]]


class JoinTicket:
    """One admitted join's place; ``release`` (idempotent) gives it to the next in line."""

    def __init__(self, admission: JoinAdmission | None, address: str | None = None) -> None:
        self._admission = admission  # None: admitted without a place (no cap)
        self._address = address
        self._viewer_id: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        if admission is not None:
            self._timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self.release)

    @property
    def held(self) -> bool:
        return self._admission is not None

    def bind(self, viewer_id: str) -> None:
        """The join made viewer ``viewer_id``: its connection coming up (or its end)
        settles the place. In cluster mode the place is given back now."""
        admission = self._admission
        if admission is None:
            return
        if cluster_mode():
            self.release()
            return
        self._viewer_id = viewer_id
        admission._bound[viewer_id] = self
        timer = self._timer
        loop = asyncio.get_running_loop()
        if timer is None or timer.when() > loop.time() + ANSWERED_HOLD_SECONDS:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_later(ANSWERED_HOLD_SECONDS, self.release)

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._viewer_id is not None:
            admission._bound.pop(self._viewer_id, None)
        admission._give_back(self._address)


@dataclass(eq=False)
class _Waiter:
    turn: asyncio.Future[None]
    address: str | None


class JoinAdmission:
    """This process's joins in progress, and the queue of those waiting for a place.

    One client address holds at most half the places (``share``): its joins past that wait
    while others' go ahead, so one address (a flood of joins that never connect, each
    holding its place for ``HOLD_SECONDS``) cannot take every place. Otherwise first come,
    first served."""

    def __init__(self) -> None:
        self._active = 0
        self._by_address: Counter[str] = Counter()
        self._waiting: deque[_Waiter] = deque()
        self._bound: dict[str, JoinTicket] = {}

    @property
    def active(self) -> int:
        """Joins holding a place."""
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def try_enter(self, *, address: str | None = None) -> JoinTicket | None:
        """A place now, if one is free for ``address`` (else ``None``). Nobody waiting could
        take it: a freed place goes to the first waiter who may take one at once."""
        if not onair_settings().join_concurrency:
            return JoinTicket(None)
        if not self._may_take(address):
            return None
        self._take(address)
        return JoinTicket(self, address)

    async def enter(
        self, *, address: str | None = None, queued: Queued | None = None
    ) -> JoinTicket:
        """A place, after those who came first. ``queued`` is awaited with the join's
        position (1: next) if it has to wait. Raises ``ServiceUnavailableError`` when the
        queue is full or the wait reaches ``JOIN_QUEUE_SECONDS``."""
        ticket = self.try_enter(address=address)
        if ticket is not None:
            return ticket
        conf = onair_settings()
        if len(self._waiting) >= conf.join_queue_max:
            raise ServiceUnavailableError(
                "Too many viewers are joining right now; try again in a few seconds.",
                code="join_queue_full",
                retry_after=RETRY_AFTER_SECONDS,
            )
        waiter = _Waiter(asyncio.get_running_loop().create_future(), address)
        self._waiting.append(waiter)
        try:
            if queued is not None:
                await queued(len(self._waiting))
            async with asyncio.timeout(conf.join_queue_seconds or None):
                await asyncio.shield(waiter.turn)
        except BaseException as exc:
            if waiter.turn.done():
                # Handed a place in the same turn as the timeout or cancellation came.
                JoinTicket(self, address).release()
            else:
                waiter.turn.cancel()
                self._waiting.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ServiceUnavailableError(
                    "Too many viewers are joining right now; try again in a few seconds.",
                    code="join_queue_timeout",
                    retry_after=RETRY_AFTER_SECONDS,
                ) from None
            raise
        return JoinTicket(self, address)

    def settle(self, viewer_id: str) -> None:
        """Viewer ``viewer_id``'s connection is up, or it is gone: its join is over."""
        ticket = self._bound.get(viewer_id)
        if ticket is not None:
            ticket.release()

    def _may_take(self, address: str | None) -> bool:
        concurrency = onair_settings().join_concurrency
        if self._active >= concurrency:
            return False
        return address is None or self._by_address[address] < max(concurrency // 2, 1)

    def _take(self, address: str | None) -> None:
        self._active += 1
        if address is not None:
            self._by_address[address] += 1

    def _give_back(self, address: str | None) -> None:
        """A place is free again: to the first waiters who may take one."""
        self._active -= 1
        if address is not None:
            self._by_address[address] -= 1
            if self._by_address[address] <= 0:
                del self._by_address[address]
        while self._waiting:
            waiter = next((w for w in self._waiting if self._may_take(w.address)), None)
            if waiter is None:
                return
            self._waiting.remove(waiter)
            self._take(waiter.address)
            waiter.turn.set_result(None)


_admissions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, JoinAdmission] = (
    weakref.WeakKeyDictionary()
)


def join_admission() -> JoinAdmission:
    """The process's admission (one per event loop: tests run many)."""
    loop = asyncio.get_running_loop()
    admission = _admissions.get(loop)
    if admission is None:
        admission = _admissions[loop] = JoinAdmission()
    return admission
