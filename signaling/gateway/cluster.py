"""Cluster mode (``ONAIR_SFU_MODE=cluster``): the SFU runs in ``manage.py runsfu`` workers,
and every daphne process reaches them through the Redis channel layer.

Each call of the contract (``contract.VERBS``) is a request message on the worker's
channel, naming the verb, with a reply channel of its own (``layer.new_channel()``) and a
timeout; the worker serves it with its embedded gateway (``signaling.gateway.worker``).
Session ids carry the worker's id (``<worker>.<session>``), so a later call for a session
reaches the worker that holds it.

Placement: a broadcast's publisher goes to its origin worker (the least loaded when the
broadcast starts, kept in Redis); a viewer goes to the origin while it has room
(``ONAIR["SFU_MAX_VIEWERS_PER_WORKER"]``), else to the least-loaded worker with room,
which pipes the broadcast from the origin (``sfu.cluster``); when every worker is full, to
the least loaded anyway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer

from onair.exceptions import (
    ApplicationError,
    ConflictError,
    InvalidInputError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from onair.logcontext import log_context
from sfu.tasks import TaskSet
from signaling.gateway.contract import (
    NO_BROADCAST,
    VERBS,
    ConnectNotice,
    IceCandidate,
    IceCredentials,
    PublishResult,
    RecordingProgress,
    SfuGatewayError,
    SfuUnavailableError,
    ViewResult,
    local_session_id,
    session_id,
    session_worker,
)
from signaling.gateway.directory import WorkerDirectory, WorkerInfo

logger = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = 10.0
REQUEST_TYPE = "sfu.request"
_ERRORS: dict[str, type[ApplicationError]] = {  # the first class an error is an instance of
    "sfu_unavailable": SfuUnavailableError,
    "invalid": InvalidInputError,
    "conflict": ConflictError,
    "too_many_requests": TooManyRequestsError,
    "unavailable": ServiceUnavailableError,
}


# --- the request protocol ------------------------------------------------------------------


def encode_error(exc: ApplicationError) -> dict[str, Any]:
    kind = next((k for k, cls in _ERRORS.items() if isinstance(exc, cls)), "sfu")
    error: dict[str, Any] = {"kind": kind, "code": exc.code, "message": exc.message}
    if isinstance(exc, TooManyRequestsError | ServiceUnavailableError):
        error["retry_after"] = exc.retry_after
    return error


def _decode_error(error: dict[str, Any]) -> ApplicationError:
    cls = _ERRORS.get(error["kind"], SfuGatewayError)
    if issubclass(cls, TooManyRequestsError | ServiceUnavailableError):
        return cls(error["message"], code=error["code"], retry_after=error.get("retry_after"))
    return cls(error["message"], code=error["code"])


async def call(layer: BaseChannelLayer, channel: str, method: str, **params: Any) -> Any:
    """Ask the worker listening on ``channel`` to run ``method``; its result, or its
    refusal raised as the ``ApplicationError`` it was.

    The reply channel has the default prefix, like the consumers' own: channels-redis reads
    all of a process's channels through one list per prefix, and a second prefix would
    wait behind the first one's blocking reads."""
    reply_to = await layer.new_channel()
    await tell(layer, channel, method, reply_to=reply_to, **params)
    try:
        response = await asyncio.wait_for(layer.receive(reply_to), RPC_TIMEOUT_SECONDS)
    except TimeoutError as exc:
        raise SfuUnavailableError(
            f"The media server did not answer ({method}) within {RPC_TIMEOUT_SECONDS:.0f} s."
        ) from exc
    if "error" in response:
        raise _decode_error(response["error"])
    return response["result"]


async def tell(
    layer: BaseChannelLayer,
    channel: str,
    method: str,
    *,
    reply_to: str | None = None,
    **params: Any,
) -> None:
    """Send a request without waiting for (or, without ``reply_to``, wanting) an answer."""
    message = {
        "type": REQUEST_TYPE,
        "method": method,
        "params": params,
        "reply_to": reply_to,
        "log": log_context(),  # the worker's lines for this request carry the same ids
    }
    try:
        await layer.send(channel, message)
    except ChannelFull as exc:
        raise SfuUnavailableError("The media server is overloaded; try again.") from exc


# --- the daphne side -------------------------------------------------------------------------


class ClusterGateway:
    """The gateway of a daphne process in cluster mode: the contract's calls, served by the
    worker concerned. Caps on sessions (``signaling.session_limits``) apply per worker."""

    def __init__(self) -> None:
        self.directory = WorkerDirectory.from_settings()
        self._tasks = TaskSet()

    @staticmethod
    def _layer() -> BaseChannelLayer:
        layer = get_channel_layer()
        if layer is None:
            raise SfuUnavailableError("Cluster mode needs the Redis channel layer.")
        return layer

    async def _workers(self) -> list[WorkerInfo]:
        workers = await self.directory.workers()
        if not workers:
            raise SfuUnavailableError("No media server is running (manage.py runsfu).")
        return workers

    async def _call(self, worker: WorkerInfo, method: str, **params: Any) -> Any:
        verb = VERBS[method]
        encoded = {name: verb.encode(value) for name, value in params.items()}
        return verb.decode_result(await call(self._layer(), worker.channel, method, **encoded))

    async def _forward(self, method: str, **params: Any) -> Any:
        """A call about one peer (``VERBS[method].session``), to the worker holding it, with
        the peer's id in that worker. If that worker is gone: ``ConflictError`` where the
        verb says so, else what the embedded gateway answers for a peer that is over."""
        verb = VERBS[method]
        assert verb.session is not None
        qualified = params[verb.session]
        worker = await self.directory.worker(session_worker(qualified))
        if worker is None:
            if verb.gone is not None:
                raise ConflictError(verb.gone, code="no_session")
            return verb.over
        params = {**params, verb.session: local_session_id(qualified)}
        if verb.told:
            await tell(self._layer(), worker.channel, method, **params)
            return None
        return await self._call(worker, method, **params)

    async def origin(self, stream_id: str) -> WorkerInfo:
        """The live worker holding (or to hold) the stream's publisher."""
        workers = await self._workers()
        alive = {w.id: w for w in workers}
        current = await self.directory.origin(stream_id)
        if current in alive:
            return alive[current]
        least_loaded = min(workers, key=lambda w: (w.publishers, w.viewers))
        chosen = await self.directory.set_origin(stream_id, least_loaded.id, replacing=current)
        return alive.get(chosen, least_loaded)

    # --- lifecycle ---------------------------------------------------------------------

    def expect_publisher(self, *, stream_id: str) -> None:
        """Nothing here: the workers reconcile what is live with what they hold."""

    async def stopping(self) -> None:
        """Nothing here: the media is in the workers, which stop on their own."""

    async def close_all(self, *, wait_seconds: float = RPC_TIMEOUT_SECONDS) -> None:
        """Wait for the requests sent from synchronous code (``close_router_soon``)."""
        await self._tasks.wait(within=wait_seconds)

    async def close_router(self, *, stream_id: str) -> None:
        """End the broadcast on every worker (its origin and its edges)."""
        layer = self._layer()
        for worker in await self.directory.workers():
            await tell(layer, worker.channel, "close_router", stream_id=stream_id)
        await self.directory.clear_origin(stream_id)

    def close_router_soon(self, *, stream_id: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            async_to_sync(self.close_router)(stream_id=stream_id)
        else:
            self._tasks.spawn(self.close_router(stream_id=stream_id))

    # --- publishers --------------------------------------------------------------------

    async def publish(
        self, *, stream_id: str, offer_sdp: str, client: str | None = None
    ) -> PublishResult:
        origin = await self.origin(stream_id)
        result: PublishResult = await self._call(
            origin, "publish", stream_id=stream_id, offer_sdp=offer_sdp, client=client
        )
        return PublishResult(
            session_id=session_id(origin.id, result.session_id), answer_sdp=result.answer_sdp
        )

    async def _current_origin(self, stream_id: str) -> WorkerInfo | None:
        """The live worker holding the stream's publisher, if any (none is chosen)."""
        origin = await self.directory.origin(stream_id)
        return await self.directory.worker(origin) if origin is not None else None

    async def publisher_active(self, *, stream_id: str) -> bool:
        worker = await self._current_origin(stream_id)
        if worker is None:
            return False
        return bool(await self._call(worker, "publisher_active", stream_id=stream_id))

    async def publisher_gone(self, *, stream_id: str, session_id: str) -> None:
        await self._forward("publisher_gone", stream_id=stream_id, session_id=session_id)

    async def publisher_withdraw(self, *, stream_id: str, session_id: str) -> bool:
        return bool(
            await self._forward("publisher_withdraw", stream_id=stream_id, session_id=session_id)
        )

    async def publisher_connection_state(self, *, stream_id: str, session_id: str) -> str | None:
        state: str | None = await self._forward(
            "publisher_connection_state", stream_id=stream_id, session_id=session_id
        )
        return state

    async def publisher_candidate(
        self, *, stream_id: str, session_id: str, candidate: IceCandidate
    ) -> None:
        await self._forward(
            "publisher_candidate", stream_id=stream_id, session_id=session_id, candidate=candidate
        )

    async def publisher_restart_ice(
        self, *, stream_id: str, session_id: str, remote: IceCredentials
    ) -> IceCredentials:
        local: IceCredentials = await self._forward(
            "publisher_restart_ice", stream_id=stream_id, session_id=session_id, remote=remote
        )
        return local

    # --- viewers -----------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        stream_id: str,
        offer_sdp: str | None = None,
        notice: ConnectNotice | None = None,
        client: str | None = None,
    ) -> ViewResult:
        origin = await self.origin(stream_id)
        others = sorted(
            (w for w in await self._workers() if w.id != origin.id), key=lambda w: w.viewers
        )
        placement: dict[str, Any] = {"stream_id": stream_id, "offer_sdp": offer_sdp}
        placement |= {"origin": origin.id, "notice": notice, "client": client}
        for worker in (origin, *others):
            try:
                result = await self._call(worker, "subscribe", capped=True, **placement)
            except SfuUnavailableError:
                if worker is origin:
                    raise
                continue  # an edge candidate just died: the next one
            if result is not None:
                return _placed(worker, result)
        # Every worker is full: the least loaded takes one more rather than refusing.
        worker = min((origin, *others), key=lambda w: w.viewers)
        return _placed(worker, await self._call(worker, "subscribe", capped=False, **placement))

    async def viewer_connection_state(self, *, stream_id: str, viewer_id: str) -> str | None:
        state: str | None = await self._forward(
            "viewer_connection_state", stream_id=stream_id, viewer_id=viewer_id
        )
        return state

    async def viewer_answer(self, *, stream_id: str, viewer_id: str, answer_sdp: str) -> None:
        await self._forward(
            "viewer_answer", stream_id=stream_id, viewer_id=viewer_id, answer_sdp=answer_sdp
        )

    async def viewer_candidate(
        self, *, stream_id: str, viewer_id: str, candidate: IceCandidate
    ) -> None:
        await self._forward(
            "viewer_candidate", stream_id=stream_id, viewer_id=viewer_id, candidate=candidate
        )

    async def viewer_restart_ice(
        self, *, stream_id: str, viewer_id: str, remote: IceCredentials
    ) -> IceCredentials:
        local: IceCredentials = await self._forward(
            "viewer_restart_ice", stream_id=stream_id, viewer_id=viewer_id, remote=remote
        )
        return local

    async def viewer_close(self, *, stream_id: str, viewer_id: str) -> None:
        await self._forward("viewer_close", stream_id=stream_id, viewer_id=viewer_id)

    async def viewer_choose_layer(
        self, *, stream_id: str, viewer_id: str, layer: int | None
    ) -> None:
        await self._forward(
            "viewer_choose_layer", stream_id=stream_id, viewer_id=viewer_id, layer=layer
        )

    # --- recording: the origin worker records --------------------------------------------

    async def recording_start(self, *, stream_id: str, recording_id: str) -> None:
        worker = await self._current_origin(stream_id)
        if worker is None:
            raise ConflictError("No media server holds the broadcast.", code=NO_BROADCAST)
        await self._call(worker, "recording_start", stream_id=stream_id, recording_id=recording_id)

    async def recording_stop(self, *, stream_id: str) -> None:
        worker = await self._current_origin(stream_id)
        if worker is not None:
            await self._call(worker, "recording_stop", stream_id=stream_id)

    async def recording_status(self, *, stream_id: str) -> RecordingProgress | None:
        worker = await self._current_origin(stream_id)
        if worker is None:
            return None
        status: RecordingProgress | None = await self._call(
            worker, "recording_status", stream_id=stream_id
        )
        return status


def _placed(worker: WorkerInfo, result: ViewResult) -> ViewResult:
    return ViewResult(viewer_id=session_id(worker.id, result.viewer_id), sdp=result.sdp)
