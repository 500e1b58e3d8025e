"""The load generator process: N non-decoding viewers of one server, driven over stdin.

Commands and replies are JSON lines. ``{"op": "grow", "n": N}`` adds viewers until there
are N (joining a few at a time) and reports who connected and how fast;
``{"op": "trace", "seconds": S}`` returns every viewer's packet arrival times for S seconds
(``trace_begin``, then ``trace_end``: over the time between);
``{"op": "join_decoded", "count": K, "spacing": S}`` has K decoding viewers join one after
another, a random 0-S seconds apart, and returns each one's time from its start to its first decoded
frame (it then leaves);
``{"op": "snapshot"}`` returns every viewer's packet and byte counters, from which the
runner computes rates over its steady window;
``{"op": "flood", "count": F, "per_second": R, "packets": P}`` has F more viewers join (not
in the snapshots) and each NACK its last P video packets R times a second until
``{"op": "stop_flood"}``, which has them leave and returns how many NACKs each sent;
``{"op": "prepare", "n": N, "block": B}`` makes N more viewers' offers (peer connections, candidates
gathered) without sending them, and ``{"op": "crowd", "at": [T, ...], "within": W}`` has the
prepared viewers send them (WHEP), the i-th at ``time.monotonic()`` T[i], and reports when
each was requested, answered and got its first keyframe (within W seconds): a flash crowd
(``bench.flash_crowd``), apart from the viewers above;
``{"op": "quit"}`` closes everything.

    python -m bench.loadgen --target whep --url http://127.0.0.1:PORT
    python -m bench.loadgen --target whep --url http://127.0.0.1:PORT --slug demo  # OnAir's
    python -m bench.loadgen --target janus --url http://127.0.0.1:PORT/janus
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import random
import sys
import time
from typing import Any

from bench import http
from bench.janus import JanusClient
from bench.viewer import Viewer, wait_connected

JOIN_CONCURRENCY = 8
JOIN_TIMEOUT = 15.0


class LoadGenerator:
    def __init__(self, target: str, url: str, slug: str | None = None) -> None:
        self._target = target
        self._url = url
        self._whep_url = f"{url}/whep" + (f"/{slug}" if slug else "")
        self._crowd: list[Viewer] = []
        self._block = 0
        self._janus = JanusClient(url) if target == "janus" else None
        self.viewers: list[Viewer] = []
        self._flooders: list[tuple[Viewer, list[int]]] = []
        self._flooding: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._janus is not None:
            await self._janus.connect()

    async def _join(self, viewer: Viewer) -> dict[str, Any]:
        try:
            if self._janus is not None:
                await self._janus.watch(viewer.answer, viewer.add_remote_candidate)
            else:
                await viewer.watch_by_offer(self._whep)
            connected = await wait_connected(viewer, JOIN_TIMEOUT)
        except Exception as exc:
            viewer.error = repr(exc)
            connected = False
        first = viewer.counters.first_packet_at
        join_ms = (first - viewer.started_at) * 1000 if connected and first else None
        return {"index": viewer.index, "connected": connected, "join_ms": join_ms}

    async def _whep(self, offer: str, source: str | None = None) -> str:
        response = await http.request(
            "POST", self._whep_url, offer.encode(), content_type="application/sdp", source=source
        )
        if response.status != 201:
            raise RuntimeError(f"WHEP: HTTP {response.status}: {response.body[:200]!r}")
        return response.body.decode()

    async def grow(self, n: int) -> dict[str, Any]:
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def join_one(index: int) -> dict[str, Any]:
            async with gate:
                viewer = Viewer(index)
                self.viewers.append(viewer)
                return await self._join(viewer)

        joins = await asyncio.gather(*(join_one(i) for i in range(len(self.viewers), n)))
        return {
            "viewers": len(self.viewers),
            "joins": joins,
            "errors": sorted({v.error for v in self.viewers if v.error}),
        }

    async def prepare(self, n: int, block: int) -> dict[str, Any]:
        """``n`` more crowd viewers, their offers made and not sent. Each will request from
        an address of its own, 127.<1 + block>.x.y, as a crowd comes from many clients."""
        self._block = block
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def prepare_one() -> None:
            async with gate:
                viewer = Viewer(len(self._crowd))
                self._crowd.append(viewer)
                await viewer.prepare_offer()

        await asyncio.gather(*(prepare_one() for _ in range(n)))
        return {"prepared": len(self._crowd)}

    async def crowd(self, at: list[float], within: float) -> dict[str, Any]:
        """The prepared viewers request, the i-th at monotonic time ``at[i]``; each one's
        request, answer and first keyframe times (None: not within ``within`` s)."""

        async def join(viewer: Viewer, when: float) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            requested = time.monotonic()
            answered = None
            try:
                third, fourth = divmod(viewer.index, 250)
                source = f"127.{1 + self._block}.{third}.{fourth + 1}"
                await viewer.request(functools.partial(self._whep, source=source))
                answered = time.monotonic()
                deadline = requested + within
                while viewer.counters.first_keyframe_at is None and time.monotonic() < deadline:
                    if viewer.pc.connectionState in ("failed", "closed"):
                        raise RuntimeError(f"connection {viewer.pc.connectionState}")
                    await asyncio.sleep(0.05)
            except Exception as exc:
                viewer.error = str(exc)[:200]
            return {
                "requested": requested,
                "answered": answered,
                "keyframe": viewer.counters.first_keyframe_at,
                "error": viewer.error,
            }

        joins = await asyncio.gather(*(join(v, t) for v, t in zip(self._crowd, at, strict=False)))
        return {"joins": joins}

    async def join_decoded(self, count: int, spacing: float) -> dict[str, Any]:
        """Join → first decoded frame of ``count`` decoding viewers, one at a time."""
        join_ms: list[float | None] = []
        for index in range(count):
            if index:
                # random, so that joins do not lock onto one phase of the source's keyframes
                await asyncio.sleep(random.uniform(0, spacing))
            viewer = Viewer(-1 - index, decode=True)
            try:
                if self._janus is not None:
                    await self._janus.watch(viewer.answer, viewer.add_remote_candidate)
                else:
                    await viewer.watch_by_offer(self._whep)
                assert viewer.first_frame_at is not None
                decoded_at = await asyncio.wait_for(viewer.first_frame_at, JOIN_TIMEOUT)
                join_ms.append((decoded_at - viewer.started_at) * 1000)
            except Exception:
                join_ms.append(None)
            await viewer.close()
        return {"join_ms": join_ms}

    async def trace(self, seconds: float) -> dict[str, Any]:
        """Every viewer's arrival time of every packet for ``seconds``."""
        self.trace_begin()
        await asyncio.sleep(seconds)
        return self.trace_end()

    def trace_begin(self) -> dict[str, Any]:
        for viewer in self.viewers:
            viewer.counters.arrivals = {}
        return {"tracing": True}

    def trace_end(self) -> dict[str, Any]:
        """Every viewer's arrival time of every packet since ``trace_begin``."""
        arrivals = []
        for viewer in self.viewers:
            arrivals.append({key.hex(): at for key, at in (viewer.counters.arrivals or {}).items()})
            viewer.counters.arrivals = None
        return {"arrivals": arrivals}

    async def flood(self, count: int, per_second: float, packets: int) -> dict[str, Any]:
        """``count`` viewers join and NACK their last ``packets`` video packets,
        ``per_second`` times a second each, until ``stop_flood``."""
        joins = []
        for index in range(count):
            viewer = Viewer(-1000 - index)
            viewer.counters.sequence_numbers = {}
            joins.append(await self._join(viewer))
            sent = [0]
            self._flooders.append((viewer, sent))
            self._flooding.append(asyncio.ensure_future(_flood(viewer, per_second, packets, sent)))
        return {"joins": joins}

    async def stop_flood(self) -> dict[str, Any]:
        for task in self._flooding:
            task.cancel()
        await asyncio.gather(*self._flooding, return_exceptions=True)
        nacks = [sent[0] for _, sent in self._flooders]
        packets = [viewer.counters.packets for viewer, _ in self._flooders]
        await asyncio.gather(*(v.close() for v, _ in self._flooders), return_exceptions=True)
        self._flooding.clear()
        self._flooders.clear()
        return {"nacks": nacks, "packets": packets}

    def snapshot(self) -> dict[str, Any]:
        return {
            "at": time.monotonic(),
            "viewers": [[v.counters.packets, v.counters.octets, v.connected] for v in self.viewers],
        }

    async def close(self) -> None:
        await self.stop_flood()
        await asyncio.gather(
            *(v.close() for v in (*self.viewers, *self._crowd)), return_exceptions=True
        )
        if self._janus is not None:
            await self._janus.close()


async def _flood(viewer: Viewer, per_second: float, packets: int, sent: list[int]) -> None:
    """NACK the viewer's last ``packets`` video packets ``per_second`` times a second, on a
    fixed schedule; ``sent[0]`` counts the NACKs sent."""
    period = 1 / per_second
    next_at = time.monotonic()
    while True:
        if await viewer.nack_last(packets):
            sent[0] += 1
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def serve(target: str, url: str, slug: str | None = None) -> None:
    load = LoadGenerator(target, url, slug)
    await load.start()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    reply({"ready": True})
    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "grow":
            reply(await load.grow(command["n"]))
        elif command["op"] == "join_decoded":
            reply(await load.join_decoded(command["count"], command["spacing"]))
        elif command["op"] == "trace":
            reply(await load.trace(command["seconds"]))
        elif command["op"] == "trace_begin":
            reply(load.trace_begin())
        elif command["op"] == "trace_end":
            reply(load.trace_end())
        elif command["op"] == "flood":
            reply(await load.flood(command["count"], command["per_second"], command["packets"]))
        elif command["op"] == "stop_flood":
            reply(await load.stop_flood())
        elif command["op"] == "prepare":
            reply(await load.prepare(command["n"], command["block"]))
        elif command["op"] == "crowd":
            reply(await load.crowd(command["at"], command["within"]))
        elif command["op"] == "snapshot":
            reply(load.snapshot())
        elif command["op"] == "quit":
            break
    await load.close()
    reply({"closed": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["janus", "whep"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--slug", help="whep: OnAir's own endpoint, /whep/SLUG")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # uvloop roughly halves the viewers' per-datagram cost, which keeps the load core
    # unsaturated; without requirements-bench.txt (the smoke test) asyncio's loop will do.
    try:
        import uvloop

        uvloop.run(serve(args.target, args.url, args.slug))
    except ImportError:
        asyncio.run(serve(args.target, args.url, args.slug))


if __name__ == "__main__":
    main()
