"""Background work kept until done: one task set for the SFU's routers and pipes and for the
gateway that drives them."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class TaskSet:
    """Tasks their owner starts and must be able to wait for or cancel when it closes.

    Each runs in a fresh context (``contextvars``), not in that of whoever set it off:
    nothing the caller's context holds (a web framework's per-request executor, say) is used
    by work that outlives the call. A task that fails is logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def wait(self, *, within: float | None = None) -> bool:
        """Wait for every task, including those started meanwhile: up to ``within``
        seconds (``None``: as long as it takes); False if some are still running then."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while self._tasks:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    def cancel_soon(self) -> list[asyncio.Task[Any]]:
        """Cancel every task still running, without waiting; the cancelled tasks."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        return tasks

    async def cancel(self) -> None:
        """Cancel every task still running, and wait until they are."""
        await asyncio.gather(*self.cancel_soon(), return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        log_failure(task)


def log_failure(task: asyncio.Task[Any]) -> None:
    """A done task's exception, if it raised one, as an ERROR record."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("background task failed", exc_info=task.exception())
