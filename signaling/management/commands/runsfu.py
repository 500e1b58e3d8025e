"""``manage.py runsfu [--workers N]``: SFU worker processes for cluster mode.

One worker uses one core; run one per core. With ``--workers N`` this process supervises N
worker processes and starts a new one when one exits; stop it with SIGTERM or Ctrl-C.
Worker *i* (``--worker-index``, which the supervisor passes) serves its ICE on
``UDP_MUX_PORT`` + *i* when that setting is on: workers started one by one (a service per
worker) each need their own index.
Needs ``ONAIR_SFU_MODE=cluster`` and ``REDIS_URL`` (and ``DATABASE_URL`` shared with daphne).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from onair.conf import cluster_mode, onair_settings
from onair.metrics import MetricsListener
from signaling.gateway import freeze_startup_objects
from signaling.gateway.directory import WorkerInfo
from signaling.gateway.worker import SfuWorker

_RESTART_DELAY_SECONDS = 1.0
_DRAIN_SECONDS = 1.0


class Command(BaseCommand):
    help = "Run SFU worker processes (cluster mode: ONAIR_SFU_MODE=cluster, REDIS_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workers", type=int, default=1, help="worker processes (one/core)")
        parser.add_argument(
            "--worker-index",
            type=int,
            default=0,
            help="this worker's place (0, 1, ...): its shared ICE port is UDP_MUX_PORT + it, "
            "its metrics port METRICS_SFU_PORT + it",
        )

    def handle(self, *args: Any, workers: int, worker_index: int, **options: Any) -> None:
        if not cluster_mode():
            raise CommandError("runsfu serves cluster mode only: set ONAIR_SFU_MODE=cluster.")
        if "redis" not in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower():
            raise CommandError("runsfu needs the Redis channel layer: set REDIS_URL.")
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if worker_index < 0:
            raise CommandError("--worker-index must be 0 or more.")
        mux_port = onair_settings().ice.udp_mux_port
        if mux_port and mux_port + worker_index + workers - 1 > 65535:
            raise CommandError("UDP_MUX_PORT + the worker index is past port 65535.")
        metrics_port = onair_settings().metrics.sfu_port
        if metrics_port and metrics_port + worker_index + workers - 1 > 65535:
            raise CommandError("METRICS_SFU_PORT + the worker index is past port 65535.")
        if workers == 1:
            self._run_worker(worker_index)
        else:
            self._supervise(workers, worker_index)

    def _run_worker(self, index: int) -> None:
        host = onair_settings().sfu_pipe_host
        worker = SfuWorker(host=host, worker_index=index)
        metrics = MetricsListener()
        base_port = onair_settings().metrics.sfu_port
        metrics_port = base_port + index if base_port else 0
        freeze_startup_objects()

        def ready(info: WorkerInfo) -> None:
            self.stdout.write(
                f"sfu worker {info.id} ready (pid {info.pid}, pipes on {info.host}, "
                f"up to {worker.max_viewers} viewers before edges)",
            )
            self.stdout.flush()

        async def main() -> None:
            if metrics_port:
                metrics_host = onair_settings().metrics.sfu_host
                bound = await metrics.start(metrics_host, metrics_port)
                self.stdout.write(f"sfu worker metrics on http://{bound[0]}:{bound[1]}/metrics")
            task = asyncio.ensure_future(worker.run(ready))
            loop = asyncio.get_running_loop()
            stopping: list[asyncio.Task[None]] = []  # the one stop, held until it is done

            def stop() -> None:
                if not stopping:
                    stopping.append(loop.create_task(worker.stop()))

            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop)
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await metrics.close()
            await _drain(within=_DRAIN_SECONDS)
            # The loop closes its signal wake-up pipe before it lets go of the handlers: a
            # second SIGTERM in between would be reported as an error ("Bad file
            # descriptor"). The worker has stopped; later signals change nothing.
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)

        asyncio.run(main())
        self.stdout.write(f"sfu worker {worker.id} stopped")

    def _supervise(self, count: int, first_index: int) -> None:
        def command(index: int) -> list[str]:
            return [
                *(sys.executable, sys.argv[0], "runsfu", "--workers", "1"),
                *("--worker-index", str(first_index + index)),
            ]

        children = [subprocess.Popen(command(index)) for index in range(count)]
        self.stdout.write(f"runsfu: supervising {count} workers (pids {[c.pid for c in children]})")
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopping:
            time.sleep(0.2)
            for index, child in enumerate(children):
                if child.poll() is not None and not stopping:
                    self.stderr.write(f"runsfu: worker pid {child.pid} exited; starting another")
                    time.sleep(_RESTART_DELAY_SECONDS)
                    children[index] = subprocess.Popen(command(index))
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


async def _drain(*, within: float) -> None:
    """Cancel what still runs (aiortc's tasks of closed connections), and what that
    cancelling starts, so that none is left pending when the loop closes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        others = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        if not others:
            return
        for task in others:
            task.cancel()
        await asyncio.wait(others, timeout=max(deadline - loop.time(), 0))
