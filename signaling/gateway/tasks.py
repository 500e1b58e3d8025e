"""The gateway's background work: a set of tasks, each in a fresh context, kept until done."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class TaskSet:
    """Tasks the gateway (or a cluster worker) starts and must be able to wait for or
    cancel. Each runs in a fresh context, not in that of whoever set it off (a
    ``database_sync_to_async`` thread ending a broadcast, a request's), whose asgiref
    executor its database calls would otherwise try to use after it is gone or busy
    ("Single thread executor already being used"). A task that fails is logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def wait(self, *, within: float) -> bool:
        """Wait up to ``within`` seconds for every task, including those started
        meanwhile; False if some are still running then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    async def cancel(self) -> None:
        """Cancel every task still running, and wait until they are."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        log_failure(task)


def log_failure(task: asyncio.Task[Any]) -> None:
    """A done task's exception, if it raised one, as an ERROR record."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("sfu gateway task failed", exc_info=task.exception())
