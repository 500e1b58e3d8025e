"""Cluster mode (``ONAIR_SFU_MODE=cluster``): the SFU runs in ``manage.py runsfu`` workers,
and every daphne process reaches them through the Redis channel layer.

Each call is a request message on the worker's channel with a reply channel of its own
(``layer.new_channel()``) and a timeout; the worker runs the in-process gateway's code on
its own loop (``signaling.sfu_worker``). Session ids carry the worker's id
(``<worker>.<session>``), so a later call for a session reaches the worker that holds it.

Placement: a broadcast's publisher goes to its origin worker (the least loaded when the
broadcast starts, kept in Redis); a viewer goes to the origin while it has room
(``ONAIR["SFU_MAX_VIEWERS_PER_WORKER"]``), else to the least-loaded worker with room,
which pipes the broadcast from the origin (``sfu.pipe``); when every worker is full, to
the least loaded anyway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from broadcast.models import Stream
from onair.exceptions import (
    ApplicationError,
    ConflictError,
    InvalidInputError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from sfu import IceCandidate, Router
from signaling.sfu_gateway import (
    ConnectNotice,
    IceCredentials,
    PublishResult,
    SfuGateway,
    SfuGatewayError,
    ViewResult,
)
from signaling.sfu_registry import SfuRegistry, WorkerInfo

logger = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = 10.0
REQUEST_TYPE = "sfu.request"
_ERRORS: dict[str, type[ApplicationError]] = {
    "invalid": InvalidInputError,
    "conflict": ConflictError,
    "too_many_requests": TooManyRequestsError,
    "unavailable": ServiceUnavailableError,
}


class SfuUnavailableError(SfuGatewayError):
    """No worker can take the request: none is running, or one did not answer."""

    code = "sfu_unavailable"


def cluster_mode() -> bool:
    return str(getattr(settings, "ONAIR", {}).get("SFU_MODE", "embedded")) == "cluster"


def max_viewers_per_worker() -> int:
    return int(getattr(settings, "ONAIR", {}).get("SFU_MAX_VIEWERS_PER_WORKER", 300))


def session_id(worker_id: str, local_id: str) -> str:
    return f"{worker_id}.{local_id}"


def session_worker(session: str) -> str:
    """The id of the worker that holds ``session``."""
    return session.partition(".")[0]


def local_session_id(session: str) -> str:
    """The id of ``session`` in its SFU (as its events name it); itself in embedded mode."""
    return session.rpartition(".")[2]


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


async def call(layer: BaseChannelLayer, channel: str, method: str, **params: Any) -> dict[str, Any]:
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
    result: dict[str, Any] = response["result"]
    return result


async def tell(
    layer: BaseChannelLayer,
    channel: str,
    method: str,
    *,
    reply_to: str | None = None,
    **params: Any,
) -> None:
    """Send a request without waiting for (or, without ``reply_to``, wanting) an answer."""
    message = {"type": REQUEST_TYPE, "method": method, "params": params, "reply_to": reply_to}
    try:
        await layer.send(channel, message)
    except ChannelFull as exc:
        raise SfuUnavailableError("The media server is overloaded; try again.") from exc


# --- the daphne side -------------------------------------------------------------------------


class ClusterGateway(SfuGateway):
    """The gateway of a daphne process in cluster mode: same calls, media elsewhere.

    The in-process inspection calls (``router``, ``publisher_session``, ``viewer_session``)
    have no meaning here: they raise ``SfuGatewayError``; their async counterparts
    (``publisher_active``, ``*_connection_state``, ``*_restart_ice``) ask the worker
    concerned.
    """

    def __init__(self) -> None:
        super().__init__()
        self.registry = SfuRegistry.from_settings()

    def router(self, stream: Stream) -> Router | None:
        raise SfuGatewayError(
            "Cluster mode: routers live in the runsfu workers, not here.", code="cluster_mode"
        )

    @staticmethod
    def _layer() -> BaseChannelLayer:
        layer = get_channel_layer()
        if layer is None:
            raise SfuUnavailableError("Cluster mode needs the Redis channel layer.")
        return layer

    async def _workers(self) -> list[WorkerInfo]:
        workers = await self.registry.workers()
        if not workers:
            raise SfuUnavailableError("No media server is running (manage.py runsfu).")
        return workers

    async def _call(self, worker: WorkerInfo, method: str, **params: Any) -> dict[str, Any]:
        return await call(self._layer(), worker.channel, method, **params)

    async def _session_worker(self, session: str) -> WorkerInfo | None:
        return await self.registry.worker(session_worker(session))

    async def _session_call(
        self,
        method: str,
        *,
        stream: Stream,
        session: tuple[str, str],
        gone: str | None = None,
        **params: Any,
    ) -> dict[str, Any] | None:
        """Call ``method`` on the worker holding ``session`` (``(field, "<worker>.<id>")``).

        If that worker is gone: ``ConflictError(gone)`` when ``gone`` is given, else None.
        """
        field, session_id = session
        worker = await self._session_worker(session_id)
        if worker is None:
            if gone is not None:
                raise ConflictError(gone, code="no_session")
            return None
        return await self._call(
            worker,
            method,
            stream_id=str(stream.pk),
            **{field: local_session_id(session_id)},
            **params,
        )

    async def _session_tell(self, method: str, *, stream: Stream, session: tuple[str, str]) -> None:
        """Tell ``method`` to the worker holding ``session`` (as ``_session_call``), not
        waiting for a reply; nothing if that worker is gone."""
        field, session_id = session
        worker = await self._session_worker(session_id)
        if worker is not None:
            await tell(
                self._layer(),
                worker.channel,
                method,
                stream_id=str(stream.pk),
                **{field: local_session_id(session_id)},
            )

    async def origin(self, stream_id: str) -> WorkerInfo:
        """The live worker holding (or to hold) the stream's publisher."""
        workers = await self._workers()
        alive = {w.id: w for w in workers}
        current = await self.registry.origin(stream_id)
        if current in alive:
            return alive[current]
        least_loaded = min(workers, key=lambda w: (w.publishers, w.viewers))
        chosen = await self.registry.set_origin(stream_id, least_loaded.id, replacing=current)
        return alive.get(chosen, least_loaded)

    # --- publishers --------------------------------------------------------------------

    async def publish(
        self, *, stream: Stream, offer_sdp: str, client: str | None = None
    ) -> PublishResult:
        origin = await self.origin(str(stream.pk))
        result = await self._call(
            origin, "publish", stream_id=str(stream.pk), offer_sdp=offer_sdp, client=client
        )
        return PublishResult(
            session_id=session_id(origin.id, result["session_id"]),
            answer_sdp=result["answer_sdp"],
        )

    async def publisher_active(self, *, stream: Stream) -> bool:
        stream_id = str(stream.pk)
        origin = await self.registry.origin(stream_id)
        worker = await self.registry.worker(origin) if origin is not None else None
        if worker is None:
            return False
        result = await self._call(worker, "publisher_active", stream_id=stream_id)
        return bool(result["active"])

    async def publisher_gone(self, *, stream: Stream, session_id: str) -> None:
        await self._session_tell(
            "publisher_gone", stream=stream, session=("session_id", session_id)
        )

    async def publisher_withdraw(self, *, stream: Stream, session_id: str) -> bool:
        result = await self._session_call(
            "publisher_withdraw", stream=stream, session=("session_id", session_id)
        )
        return result is not None and bool(result["withdrawn"])

    async def publisher_connection_state(self, *, stream: Stream, session_id: str) -> str | None:
        result = await self._session_call(
            "publisher_connection_state", stream=stream, session=("session_id", session_id)
        )
        return None if result is None else result["state"]

    async def publisher_restart_ice(
        self, *, stream: Stream, session_id: str, remote: IceCredentials
    ) -> IceCredentials:
        result = await self._session_call(
            "publisher_restart_ice",
            stream=stream,
            session=("session_id", session_id),
            gone="This publishing session is over.",
            remote=dataclasses.asdict(remote),
        )
        assert result is not None  # a gone worker raised
        return IceCredentials(**result)

    async def publisher_candidate(
        self, *, stream: Stream, session_id: str, candidate: IceCandidate
    ) -> None:
        await self._session_call(
            "publisher_candidate",
            stream=stream,
            session=("session_id", session_id),
            candidate=dataclasses.asdict(candidate),
        )

    async def close_router(self, *, stream_id: int | str) -> None:
        """End the broadcast on every worker (its origin and its edges)."""
        layer = self._layer()
        for worker in await self.registry.workers():
            await tell(layer, worker.channel, "close_router", stream_id=str(stream_id))
        await self.registry.clear_origin(str(stream_id))

    def close_router_soon(self, *, stream_id: int | str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            async_to_sync(self.close_router)(stream_id=stream_id)
        else:
            self._spawn(self.close_router(stream_id=stream_id))

    # --- viewers -----------------------------------------------------------------------

    async def subscribe(
        self,
        *,
        stream: Stream,
        offer_sdp: str | None = None,
        notice: ConnectNotice | None = None,
        client: str | None = None,
    ) -> ViewResult:
        """Caps (``signaling.session_limits``) apply per worker."""
        stream_id = str(stream.pk)
        notify = dataclasses.asdict(notice) if notice is not None else None
        origin = await self.origin(stream_id)
        others = sorted(
            (w for w in await self._workers() if w.id != origin.id), key=lambda w: w.viewers
        )
        for worker in (origin, *others):
            try:
                result = await self._call(
                    worker,
                    "subscribe",
                    stream_id=stream_id,
                    offer_sdp=offer_sdp,
                    origin=origin.id,
                    capped=True,
                    notice=notify,
                    client=client,
                )
            except SfuUnavailableError:
                if worker is origin:
                    raise
                continue  # an edge candidate just died: the next one
            if not result.get("full"):
                return ViewResult(
                    viewer_id=session_id(worker.id, result["viewer_id"]), sdp=result["sdp"]
                )
        # Every worker is full: the least loaded takes one more rather than refusing.
        worker = min((origin, *others), key=lambda w: w.viewers)
        result = await self._call(
            worker,
            "subscribe",
            stream_id=stream_id,
            offer_sdp=offer_sdp,
            origin=origin.id,
            capped=False,
            notice=notify,
            client=client,
        )
        return ViewResult(viewer_id=session_id(worker.id, result["viewer_id"]), sdp=result["sdp"])

    async def viewer_connection_state(self, *, stream: Stream, viewer_id: str) -> str | None:
        result = await self._session_call(
            "viewer_connection_state", stream=stream, session=("viewer_id", viewer_id)
        )
        return None if result is None else result["state"]

    async def viewer_restart_ice(
        self, *, stream: Stream, viewer_id: str, remote: IceCredentials
    ) -> IceCredentials:
        result = await self._session_call(
            "viewer_restart_ice",
            stream=stream,
            session=("viewer_id", viewer_id),
            gone="This viewing session is over.",
            remote=dataclasses.asdict(remote),
        )
        assert result is not None  # a gone worker raised
        return IceCredentials(**result)

    async def viewer_answer(self, *, stream: Stream, viewer_id: str, answer_sdp: str) -> None:
        await self._session_call(
            "viewer_answer",
            stream=stream,
            session=("viewer_id", viewer_id),
            gone="This viewing session is over; ask for a new one.",
            answer_sdp=answer_sdp,
        )

    async def viewer_candidate(
        self, *, stream: Stream, viewer_id: str, candidate: IceCandidate
    ) -> None:
        await self._session_call(
            "viewer_candidate",
            stream=stream,
            session=("viewer_id", viewer_id),
            candidate=dataclasses.asdict(candidate),
        )

    async def viewer_close(self, *, stream: Stream, viewer_id: str) -> None:
        await self._session_tell("viewer_close", stream=stream, session=("viewer_id", viewer_id))
