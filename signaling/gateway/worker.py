"""One SFU worker process of cluster mode (``manage.py runsfu``).

It listens on a channel of the Redis channel layer for the requests of the cluster
gateway (``signaling.gateway.cluster``) and serves each with its own embedded gateway, by
the verb's name (``contract.VERBS``), on its own event loop, so SFU events set off the same
reactions as in embedded mode (``signaling.gateway.reactions``). Its edges and pipes are
the SFU's (``sfu.cluster.ClusterNode``): the worker decides where sessions go and carries
the pipes' addresses and tracks between workers.

Every ``HEARTBEAT_SECONDS`` it writes its record and load to the worker directory
(``signaling.gateway.directory``) and looks for workers whose record expired: it closes
its own pipes and edges that depended on them, and one worker announces each death to the
affected streams' groups (``sfu.worker_gone``), whose watch pages then get a fresh offer on
a live worker (and stay counted once: their WebSocket is what counts them), ends the
dead worker's WHIP/WHEP sessions, uncounting its WHEP viewers, and finishes the recordings
it was writing on this machine (``signaling.gateway.recording``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer

from broadcast.selectors import stream_ids_live
from onair.conf import onair_settings
from onair.exceptions import ApplicationError
from onair.logcontext import log_context_set
from sfu.cluster import ClusterNode, EncodedTracks
from sfu.tasks import TaskSet
from signaling.gateway import reactions
from signaling.gateway.cluster import call, encode_error, tell
from signaling.gateway.contract import (
    VERBS,
    ConnectNotice,
    SfuUnavailableError,
    ViewResult,
    session_id,
)
from signaling.gateway.directory import HEARTBEAT_SECONDS, WorkerDirectory, WorkerInfo
from signaling.gateway.embedded import EmbeddedGateway
from signaling.gateway.recording import recordings_repair_workers
from signaling.http_session_store import SESSION_TTL_SECONDS, SessionKind, session_store

logger = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]

EDGE_IDLE_SECONDS = 10.0
STOP_CLOSE_SECONDS = 2.0  # for the work a stopping worker's routers set off
SLOW_REQUEST_SECONDS = 2.0
SESSION_REFRESH_SECONDS = SESSION_TTL_SECONDS / 3
# How long a stopping worker waits for a live one to announce it before it does itself:
# a few heartbeats, in which every live worker looks for departed ones.
LEAVE_ANNOUNCE_SECONDS = 3 * HEARTBEAT_SECONDS


def max_viewers_per_worker() -> int:
    return onair_settings().sfu_max_viewers_per_worker


class SfuWorker:
    """Serves cluster requests until cancelled; see the module docstring."""

    def __init__(self, *, host: str, max_viewers: int | None = None, worker_index: int = 0) -> None:
        self.id = f"w{secrets.token_hex(4)}"
        self.host = host
        self.channel = ""
        self.max_viewers = max_viewers if max_viewers is not None else max_viewers_per_worker()
        # Its events set off the same reactions as in embedded mode, for its sessions' ids.
        self.local = EmbeddedGateway(worker_id=self.id, worker_index=worker_index)
        self.directory = WorkerDirectory.from_settings()
        self._layer: BaseChannelLayer | None = None
        self._pending_viewers = 0
        self._node: ClusterNode | None = None
        self._edge_locks: dict[str, asyncio.Lock] = {}
        self._tasks = TaskSet()
        self._serving: asyncio.Task[Any] | None = None
        self._beating: asyncio.Task[None] | None = None
        self._closed = False
        self._load_sample = (time.monotonic(), time.process_time(), 0)
        self._sessions_refreshed = 0.0
        # The contract's calls go to the embedded gateway, by name (``contract.VERBS``),
        # except those that placement or the pipes need a word in; then the pipes' own.
        self._own: dict[str, Handler] = {
            "publish": self._publish,
            "subscribe": self._subscribe,
            "close_router": self._close_router,
            "pipe_open": self._pipe_open,
            "pipe_close": self._pipe_close,
            "pipe_tracks": self._pipe_tracks,
        }

    @property
    def layer(self) -> BaseChannelLayer:
        assert self._layer is not None
        return self._layer

    @property
    def node(self) -> ClusterNode:
        """The worker's routers as a cluster node (its pipes, edges and load)."""
        if self._node is None:
            self._node = ClusterNode(self.local.routers(), host=self.host)
        return self._node

    async def run(self, ready: Callable[[WorkerInfo], None] | None = None) -> None:
        """Serve until ``stop()`` (or cancelled)."""
        layer = get_channel_layer()
        if layer is None:
            raise SfuUnavailableError("Cluster mode needs the Redis channel layer.")
        self._layer = layer
        log_context_set(worker=self.id)  # on every line of this task and those it starts
        await self.local.open_ice_port()
        self.channel = await layer.new_channel()
        await self.directory.heartbeat(self.info())
        if ready is not None:
            ready(self.info())
        self._serving = asyncio.current_task()
        self._beating = asyncio.ensure_future(self._heartbeat())
        self._tasks.spawn(self._reconcile())
        try:
            while True:
                message = await layer.receive(self.channel)
                self._tasks.spawn(self._serve(message))
        finally:
            await self._close()
            await self.directory.close()

    async def stop(self) -> None:
        """Stop serving (SIGTERM, SIGINT): leave the registry at once (the other workers
        announce it and move its pages), tell the pages of the broadcasts held here that
        their publisher is reconnecting, close the routers; then stop receiving requests
        (the channel layer's receive is cancelled last, with nothing else under way)."""
        await self._close()
        if self._serving is not None:
            self._serving.cancel()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._beating is not None:
            self._beating.cancel()  # before leaving the registry: a beat would rejoin it
        await self.directory.deregister(self.id)
        deregistered = time.monotonic()
        await self.local.stopping()
        self.node.close_pipes()
        await self.local.close_all(wait_seconds=STOP_CLOSE_SECONDS)
        await self._leave_directory(since=deregistered)
        await self._tasks.cancel()

    async def _leave_directory(self, *, since: float) -> None:
        """A live worker announces this one's departure (and moves its pages); with none
        left (the whole cluster stopping) this one leaves the directory itself, so that no
        start announces it as dead: its broadcasts' origins are cleared, and what it held
        is listed as left for the next worker to move the pages of."""
        while not await self.directory.gone_claimed(self.id):
            alone = all(worker.id == self.id for worker in await self.directory.workers())
            if alone or time.monotonic() - since > LEAVE_ANNOUNCE_SECONDS:
                if await self.directory.claim_gone(self.id):
                    streams = await self.directory.leave(self.id)
                    await reactions.sessions_end_for_worker(worker_id=self.id)
                    logger.info("sfu worker %s left (streams %s)", self.id, streams)
                return
            await asyncio.sleep(HEARTBEAT_SECONDS / 5)

    async def _reconcile(self) -> None:
        """A worker starting: a broadcast live in the database that no worker publishes
        (a worker died and Redis forgot it, or the whole cluster restarted) gets the grace
        period, then ends unless its publisher came back somewhere."""
        for stream_id in await database_sync_to_async(stream_ids_live)():
            self._tasks.spawn(self._end_unless_republished(str(stream_id)))
        # Workers that stopped with no other to announce them: their pages move here.
        for worker_id, streams, origins in await self.directory.take_left():
            logger.info("sfu worker %s had stopped; moving its pages (%s)", worker_id, streams)
            for stream_id in streams:
                await reactions.worker_gone(
                    stream_id, worker_id=worker_id, origin=stream_id in origins
                )
        # Recordings a dead worker of this machine left open (its death announced from
        # another machine, or the whole cluster restarted): finished from their files.
        alive = {worker.id for worker in await self.directory.workers()}
        await recordings_repair_workers(dead=lambda w: w not in alive, claimant=self.id)

    # --- load and liveness ---------------------------------------------------------------

    def info(self) -> WorkerInfo:
        load = self.node.load()
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then, packets_then = self._load_sample
        elapsed = max(now - then, 1e-3)
        self._load_sample = (now, cpu, load.packets)
        return WorkerInfo(
            id=self.id,
            channel=self.channel,
            host=self.host,
            pid=os.getpid(),
            viewers=load.viewers + self._pending_viewers,
            publishers=load.publishers,
            routers=load.routers,
            packets_per_second=round(max(load.packets - packets_then, 0) / elapsed, 1),
            cpu_percent=round(100 * (cpu - cpu_then) / elapsed, 1),
            pipes_in=load.pipes_in,
            pipes_out=load.pipes_out,
            producers=load.producers,
            publishing=load.publishing,
        )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                if await self.directory.heartbeat(self.info()):
                    await self._start_over()
                for worker_id in await self.directory.gone_workers():
                    await self._peer_gone(worker_id)
                await self._close_idle_edges()
                await self._refresh_sessions()
            except Exception:
                logger.exception("sfu worker heartbeat failed", extra={"worker": self.id})

    async def _refresh_sessions(self) -> None:
        """Keep the WHIP/WHEP session resources of this worker's live peers from expiring."""
        now = time.monotonic()
        if now - self._sessions_refreshed < SESSION_REFRESH_SECONDS:
            return
        self._sessions_refreshed = now
        publishers, viewers = self.node.live_peers()
        await session_store.refresh(
            [(SessionKind.WHIP, session_id(self.id, p)) for p in publishers]
            + [(SessionKind.WHEP, session_id(self.id, v)) for v in viewers]
        )

    async def _start_over(self) -> None:
        """Declared dead after a stall: its viewers and publishers were given sessions
        elsewhere, so what is left here is stale (and a stale publisher's grace timeout
        must not end a broadcast that goes on elsewhere)."""
        logger.warning("sfu worker %s was declared dead; closing its sessions", self.id)
        self.node.reset()
        await self.local.close_all()

    async def _peer_gone(self, worker_id: str) -> None:
        """Drop what depended on a dead worker; one worker tells the pages."""
        self.node.close_pipes_to(worker_id)
        for stream_id in self.node.edges_from(worker_id):
            await self._close_router(stream_id=stream_id)
        if not await self.directory.claim_gone(worker_id):
            return
        await self._announce_gone(worker_id)
        # The recordings it was writing on this machine are finished from their files.
        self._tasks.spawn(
            recordings_repair_workers(dead=lambda w: w == worker_id, claimant=self.id)
        )

    async def _announce_gone(self, worker_id: str) -> None:
        """Forget a dead worker and tell the pages of its streams (the one claimant)."""
        streams = await self.directory.forget(worker_id)
        logger.warning(
            "sfu worker %s gone (streams %s); announced by %s", worker_id, streams, self.id
        )
        for stream_id in streams:
            origin_lost = await self.directory.origin(stream_id) == worker_id
            if origin_lost:
                await self.directory.clear_origin(stream_id, worker_id=worker_id)
                await reactions.origin_lost(stream_id)
                self._tasks.spawn(self._end_unless_republished(stream_id))
            await reactions.worker_gone(stream_id, worker_id=worker_id, origin=origin_lost)
        # Its WHIP/WHEP peers are gone with it: its WHEP viewers are uncounted now (its
        # watch pages stay counted: they move), and the sessions kept as ended.
        await reactions.sessions_end_for_worker(worker_id=worker_id)

    async def _end_unless_republished(self, stream_id: str) -> None:
        """The grace period the dead origin was keeping for its publisher, kept here: a
        broadcast whose publisher is back nowhere by then is over."""
        await asyncio.sleep(self.local.publisher_grace_seconds())
        if not any(stream_id in w.publishing for w in await self.directory.workers()):
            await reactions.end_abandoned_broadcast(stream_id)

    async def _close_idle_edges(self) -> None:
        """An edge router without viewers for EDGE_IDLE_SECONDS stops its pipe."""
        if self._pending_viewers:
            return  # a viewer on its way may be for an idle edge
        for stream_id, origin_id in self.node.idle_edges(idle_seconds=EDGE_IDLE_SECONDS):
            origin = await self.directory.worker(origin_id)
            await self._close_router(stream_id=stream_id)
            if origin is not None:
                await tell(
                    self.layer, origin.channel, "pipe_close", stream_id=stream_id, edge=self.id
                )

    # --- requests --------------------------------------------------------------------------

    async def _serve(self, message: dict[str, Any]) -> None:
        # This request's lines, and the SFU's for the peers it makes, carry the ids of the
        # request that sent it (onair.logcontext); its task has a context of its own.
        log = message.get("log") or {}
        log_context_set(
            worker=self.id,
            **{name: str(log[name]) for name in ("stream", "session") if name in log},
        )
        method = str(message.get("method", ""))
        reply_to = message.get("reply_to")
        response: dict[str, Any]
        started = time.monotonic()
        try:
            response = {"result": await self._dispatch(method, message.get("params", {}))}
        except ApplicationError as exc:
            response = {"error": encode_error(exc)}
        except Exception:
            logger.exception("sfu worker request failed", extra={"method": method})
            response = {"error": encode_error(SfuUnavailableError("The media server failed."))}
        elapsed = time.monotonic() - started
        if elapsed > SLOW_REQUEST_SECONDS:
            logger.warning("slow sfu request %s: %.2f s", method, elapsed)
        if reply_to:
            await self.layer.send(reply_to, response)

    async def _dispatch(self, method: str, params: dict[str, Any]) -> Any:
        """Run a request: the worker's own handler, else the embedded gateway's method of
        that name in the contract; the answer as it travels."""
        verb = VERBS.get(method)
        if verb is not None:
            params = verb.decode_params(params)
        own = self._own.get(method)
        if own is not None:
            result = await own(**params)
        elif verb is not None:
            result = await getattr(self.local, method)(**params)
        else:
            raise SfuUnavailableError(f"unknown request {method!r}")
        return verb.encode(result) if verb is not None else result

    async def _publish(self, *, stream_id: str, offer_sdp: str, client: str | None = None) -> Any:
        await self._become_origin(stream_id)
        return await self.local.publish(stream_id=stream_id, offer_sdp=offer_sdp, client=client)

    async def _subscribe(
        self,
        *,
        stream_id: str,
        offer_sdp: str | None,
        origin: str,
        capped: bool,
        notice: ConnectNotice | None = None,
        client: str | None = None,
    ) -> ViewResult | None:
        """A viewer, unless ``capped`` and this worker is full (``None``)."""
        if capped and self.node.viewer_count() + self._pending_viewers >= self.max_viewers:
            return None
        self._pending_viewers += 1
        try:
            if origin == self.id:
                await self._become_origin(stream_id)
            else:
                await self._become_edge(stream_id, origin)
            return await self.local.subscribe(
                stream_id=stream_id, offer_sdp=offer_sdp, notice=notice, client=client
            )
        finally:
            self._pending_viewers -= 1

    async def _close_router(self, *, stream_id: str) -> None:
        self.node.forget(stream_id)
        await self.local.close_router(stream_id=stream_id)
        await self.directory.remove_stream(self.id, stream_id)

    # --- origin and edges ------------------------------------------------------------------

    async def _become_origin(self, stream_id: str) -> None:
        """This worker holds the stream's publisher: an edge router left from an earlier
        origin gives way to a plain one."""
        if self.node.is_edge(stream_id):
            await self._close_router(stream_id=stream_id)
        await self.directory.add_stream(self.id, stream_id)

    async def _become_edge(self, stream_id: str, origin_id: str) -> None:
        """Make sure this worker has an edge router for the stream, piped from the origin."""
        lock = self._edge_locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            if self.node.edge_origin(stream_id) == origin_id:
                return
            if self.local.router(stream_id) is not None:
                await self._close_router(stream_id=stream_id)
            origin = await self.directory.worker(origin_id)
            if origin is None:
                raise SfuUnavailableError("The broadcast's media server is gone; try again.")
            address = await self.node.open_edge(stream_id, origin_id)
            await self.directory.add_stream(self.id, stream_id)
            try:
                opened = await call(
                    self.layer,
                    origin.channel,
                    "pipe_open",
                    stream_id=stream_id,
                    edge=self.id,
                    edge_channel=self.channel,
                    address=list(address),
                )
            except BaseException:
                await self._close_router(stream_id=stream_id)
                raise
            host, port = opened["address"]
            await self.node.connect_edge(stream_id, (host, port), opened["tracks"])
            logger.info("edge router piped", extra={"stream_id": stream_id, "origin": origin_id})

    async def _pipe_open(
        self, *, stream_id: str, edge: str, edge_channel: str, address: list[Any]
    ) -> dict[str, Any]:
        """On the origin: pipe the stream to an edge worker."""
        await self._become_origin(stream_id)

        def on_tracks(tracks: EncodedTracks) -> None:
            self._tasks.spawn(
                tell(self.layer, edge_channel, "pipe_tracks", stream_id=stream_id, tracks=tracks)
            )

        host, port = address
        local, tracks = await self.node.open_pipe(
            stream_id, edge, remote=(str(host), int(port)), on_tracks=on_tracks
        )
        return {"address": list(local), "tracks": tracks}

    async def _pipe_close(self, *, stream_id: str, edge: str) -> None:
        self.node.close_pipe(stream_id, edge)

    async def _pipe_tracks(self, *, stream_id: str, tracks: EncodedTracks) -> None:
        """On an edge: the origin's publisher changed its tracks."""
        await self.node.edge_tracks(stream_id, tracks)
