"""WHIP (RFC 9725) and WHEP sessions: who may publish or watch, and the session resources.

A session is what a ``201 Created`` points to: ``/whip/<slug>/<token>`` or
``/whep/<slug>/<token>``. The token (``secrets.token_urlsafe(32)``, 256 bits) is the
capability to trickle candidates to it, restart its ICE and delete it; it is only valid
under its own stream's slug and its own protocol.

Sessions are kept in ``signaling.http_session_store``: in this process's memory in the
embedded default, in Redis in cluster mode (any daphne process serves any session; the
gateway sends its requests to the worker holding the peer). The durable state stays in
the database as everywhere else: the stream's state through ``broadcast.services``, each
WHEP viewer as a ``ViewerSession`` counted through ``viewers.services``.

A ``DELETE`` forgets its session. A session whose SFU peer goes away for any other reason
(replaced by another publisher, grace period over, viewer vanished, broadcast ended, its
cluster worker died) ends: a WHEP viewer is uncounted then, and the session is kept as
ended for a while (``signaling.http_session_store``), so a client that closes its peer
connection before its ``DELETE`` (as whip-whep's ``stop()`` does) gets ``200``. That
``DELETE`` does nothing else: the broadcast may have another publisher by then. The SFU
reports departures as events, and ``signaling.gateway.reactions`` ends their sessions (a
dead worker's by the worker that announces its death).
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.db import transaction
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from broadcast.models import Stream, StreamKey
from broadcast.selectors import stream_is_managed_by, stream_key_is_active
from broadcast.services import stream_key_match
from broadcast.signals import stream_key_revoked
from onair.exceptions import (
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    PreconditionFailedError,
    UnprocessableError,
)
from onair.logcontext import log_context
from signaling.admission import join_admission
from signaling.gateway import (
    IceCandidate,
    IceCredentials,
    PublishResult,
    connection_lost,
    gateway,
    offer_validate,
)
from signaling.gateway.reactions import whep_viewer_leave
from signaling.http_session_store import HttpSession, SessionKind, session_store
from signaling.publishing import go_live, publisher_end
from signaling.sdpfrag import SdpFragment, restart_fragment

logger = logging.getLogger(__name__)

TOKEN_BYTES = 32
_ICE_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


# --- who may publish or watch ---------------------------------------------------------------


@database_sync_to_async
def whip_stream_get(*, slug: str, bearer: str | None) -> tuple[Stream, int]:
    """The stream ``bearer`` (its stream key) may publish to, and that key's id. A wrong key
    is ``401`` on a public or unlisted stream, and "not found" on a private one, as for a
    missing stream."""
    stream = Stream.objects.filter(slug=slug).first()
    if stream is None:
        raise NotFoundError("No such stream.")
    key = stream_key_match(stream=stream, secret=bearer) if bearer else None
    if key is None and stream.visibility == Stream.Visibility.PRIVATE:
        raise NotFoundError("No such stream.")  # a private stream is not revealed
    if key is None:
        raise NotAuthenticatedError(
            "Send this stream's key as a bearer token: Authorization: Bearer <stream key>.",
            code="bad_stream_key",
        )
    return stream, key.pk


@database_sync_to_async
def whep_stream_get(
    *, slug: str, user: User | AnonymousUser, bearer: str | None
) -> tuple[Stream, int | None]:
    """The stream a WHEP player may watch, and the id of the stream key that let it in (if
    one did: revoking it ends the session). Public and unlisted streams are open to anyone;
    a private one needs its owner's (or staff's) login session or API token, or the stream
    key, as a bearer token; without one it is "not found", as a missing one."""
    stream = Stream.objects.select_related("owner").filter(slug=slug).first()
    if stream is None:
        raise NotFoundError("No such stream.")
    open_to_all = stream.visibility != Stream.Visibility.PRIVATE
    if open_to_all or stream_is_managed_by(stream=stream, user=user):
        return stream, None
    if bearer:
        key = stream_key_match(stream=stream, secret=bearer)
        if key is not None:
            return stream, key.pk
        token = Token.objects.select_related("user").filter(key=bearer).first()
        if token is not None and stream_is_managed_by(stream=stream, user=token.user):
            return stream, None
    raise NotFoundError("No such stream.")


# --- creating sessions -----------------------------------------------------------------------


async def whip_session_start(
    *, stream: Stream, offer_sdp: str, key_id: int, client: str | None = None
) -> HttpSession:
    """Publish the offer and go live, as the studio does (``signaling.publishing.go_live``:
    an ended stream starts a new broadcast, a publisher already there is replaced, the last
    of concurrent publishes wins). ``key_id``: the key that let the client in; revoking it
    ends the session. A session replaced before its broadcast began is ended at once."""
    registered: list[HttpSession] = []

    async def hold(result: PublishResult) -> None:
        registered.append(
            await _register(
                SessionKind.WHIP,
                stream,
                sfu_id=result.session_id,
                answer_sdp=result.answer_sdp,
                offer_sdp=offer_sdp,
                key_id=key_id,
            )
        )

    async def release(sfu_id: str) -> None:
        await session_store.pop(kind=SessionKind.WHIP, sfu_id=sfu_id)

    publication = await go_live(
        stream=stream, offer_sdp=offer_sdp, key_id=key_id, client=client, hold=hold, release=release
    )
    if publication.replaced:
        # Its end was reported before there was a session to end.
        await session_store.end(kind=SessionKind.WHIP, sfu_id=publication.session_id)
    return registered[0]


async def whep_session_start(
    *,
    stream: Stream,
    offer_sdp: str,
    user: User | AnonymousUser,
    client: str | None = None,
    key_id: int | None = None,
) -> HttpSession:
    """Add a viewer to a live stream. It is counted like a watch page, as a WHEP viewer,
    once its connection is up (``ViewerConnected``): a client that never connects is
    never counted, and is closed at the connect deadline. ``client``: its address, for the
    session caps. The request waits for its turn among the joins (``signaling.admission``:
    ``503`` with ``Retry-After`` when the queue is full or the wait too long). ``stream``: as
    ``whep_stream_get`` loaded it for this request; read again only after a wait (not a
    query per join)."""
    offer_validate(offer_sdp=offer_sdp)
    admission = join_admission()
    ticket = admission.try_enter(address=client)
    waited = ticket is None
    if ticket is None:
        ticket = await admission.enter(address=client)
    try:
        if waited:  # the broadcast may have ended meanwhile
            await database_sync_to_async(stream.refresh_from_db)()
        if not stream.is_live:
            raise ConflictError("The broadcast is not live right now.", code="not_live")
        result = await gateway.subscribe(
            stream_id=str(stream.pk), offer_sdp=offer_sdp, client=client
        )
    except BaseException:
        ticket.release()
        raise
    ticket.bind(result.viewer_id)
    return await _register(
        SessionKind.WHEP,
        stream,
        sfu_id=result.viewer_id,
        answer_sdp=result.sdp,
        offer_sdp=offer_sdp,
        user_id=user.pk if user.is_authenticated else None,
        key_id=key_id,
    )


async def _register(
    kind: SessionKind,
    stream: Stream,
    *,
    sfu_id: str,
    answer_sdp: str,
    offer_sdp: str,
    user_id: int | None = None,
    key_id: int | None = None,
) -> HttpSession:
    session = HttpSession(
        token=secrets.token_urlsafe(TOKEN_BYTES),
        kind=kind,
        stream_id=stream.pk,
        slug=stream.slug,
        sfu_id=sfu_id,
        answer_sdp=answer_sdp,
        etag=_new_etag(),
        remote_ufrag=_ice_ufrag(offer_sdp),
        user_id=user_id,
        key_id=key_id,
        # the id its POST's lines carry, for its later requests' (signaling.views)
        log_id=log_context().get("session", ""),
    )
    await session_store.put(session)
    logger.info("%s session started", kind.value, extra={"stream": stream.slug})
    return session


@receiver(stream_key_revoked, sender=StreamKey, dispatch_uid="signaling-key-revoked-sessions")
def _key_revoked(sender: type[StreamKey], stream: Stream, key: StreamKey, **kwargs: Any) -> None:
    key_id = key.pk
    transaction.on_commit(lambda: async_to_sync(http_sessions_end_for_key)(key_id=key_id))


async def http_sessions_end_for_key(*, key_id: int) -> None:
    """End the WHEP viewers a revoked key let in (a private stream's); a WHIP publisher it
    let in ended with its broadcast, and its session URL answers ``key_revoked``."""
    for session in await session_store.with_key(key_id):
        if session.kind is SessionKind.WHEP:
            await http_session_end(session=session)


# --- session resources -----------------------------------------------------------------------


async def http_session_get(*, kind: SessionKind, slug: str, token: str) -> HttpSession:
    """The session behind a session URL; "not found" unless the URL's protocol and stream
    are the session's own."""
    session = await session_store.get(token)
    if session is None or session.kind is not kind or session.slug != slug:
        raise NotFoundError("No such session: it ended, or never existed.")
    if session.key_id is not None and not await database_sync_to_async(stream_key_is_active)(
        key_id=session.key_id
    ):
        # Its broadcast was ended with the key; the record may not be forgotten yet.
        raise NotAuthenticatedError(
            "The stream key this session was started with was revoked; it is over.",
            code="key_revoked",
        )
    return session


async def http_session_patch(
    *, session: HttpSession, fragment: SdpFragment, if_match: str | None
) -> str | None:
    """Trickle candidates (returns ``None``) or, with ``If-Match: "*"``, restart ICE
    (returns the SFU's new fragment; the session gets a new ETag)."""
    await _check_connected(session)
    body: str | None = None
    if if_match is not None and if_match.strip() in ("*", '"*"'):
        body = await _restart_ice(session, fragment)
        await session_store.put(session)
    else:
        if if_match is not None and session.etag not in _entity_tags(if_match):
            raise PreconditionFailedError(
                "If-Match does not name this session's current ICE session (see its ETag).",
            )
        if fragment.ice_ufrag is not None and fragment.ice_ufrag != session.remote_ufrag:
            raise UnprocessableError(
                "The fragment's ice-ufrag is not this session's: an ICE restart needs "
                'If-Match: "*".',
                code="ice_ufrag_mismatch",
            )
    for candidate in fragment.candidates:
        await _peer_ops(session).add_candidate(
            session,
            IceCandidate(
                candidate=candidate.line,
                sdp_mid=candidate.mid,
                sdp_mline_index=candidate.mline_index,
            ),
        )
    if fragment.end_of_candidates:
        await _peer_ops(session).add_candidate(
            session, IceCandidate(candidate="", sdp_mline_index=0)
        )
    return body


async def http_session_end(
    *, session: HttpSession, reason: Stream.EndReason = Stream.EndReason.PUBLISHER
) -> None:
    """``DELETE``: a WHIP session that is still the stream's publisher ends the broadcast
    (with ``reason``); one that was replaced by a newer publisher, or is still waiting to
    take over (pending, see ``sfu.Router``), leaves the broadcast alone. A WHEP session
    stops one viewer. An ended session (its peer is gone, and was uncounted then) is only
    forgotten."""
    removed = None
    if not session.ended:
        removed = await session_store.pop(kind=session.kind, sfu_id=session.sfu_id)
    if removed is None:  # ended before, or just now: ``_peer_gone`` ended it
        await session_store.discard(session.token)
        return
    await _peer_ops(removed).end(removed, reason)


class _PeerOps:
    """The gateway's verbs for one kind of session's SFU peer: a WHIP session's publisher,
    a WHEP session's viewer. ``_peer_ops`` picks them by the session's kind."""

    async def connection_state(self, session: HttpSession) -> str | None:
        """The peer's connection state; ``None`` once it is over."""
        raise NotImplementedError

    async def restart_ice(self, session: HttpSession, remote: IceCredentials) -> IceCredentials:
        raise NotImplementedError

    async def add_candidate(self, session: HttpSession, candidate: IceCandidate) -> None:
        raise NotImplementedError

    async def end(self, session: HttpSession, reason: Stream.EndReason) -> None:
        """``DELETE`` of a session just removed from the store."""
        raise NotImplementedError


class _PublisherOps(_PeerOps):
    async def connection_state(self, session: HttpSession) -> str | None:
        return await gateway.publisher_connection_state(
            stream_id=str(session.stream_id), session_id=session.sfu_id
        )

    async def restart_ice(self, session: HttpSession, remote: IceCredentials) -> IceCredentials:
        return await gateway.publisher_restart_ice(
            stream_id=str(session.stream_id), session_id=session.sfu_id, remote=remote
        )

    async def add_candidate(self, session: HttpSession, candidate: IceCandidate) -> None:
        await gateway.publisher_candidate(
            stream_id=str(session.stream_id), session_id=session.sfu_id, candidate=candidate
        )

    async def end(self, session: HttpSession, reason: Stream.EndReason) -> None:
        await publisher_end(stream=session.stream, session_id=session.sfu_id, reason=reason)


class _ViewerOps(_PeerOps):
    async def connection_state(self, session: HttpSession) -> str | None:
        return await gateway.viewer_connection_state(
            stream_id=str(session.stream_id), viewer_id=session.sfu_id
        )

    async def restart_ice(self, session: HttpSession, remote: IceCredentials) -> IceCredentials:
        return await gateway.viewer_restart_ice(
            stream_id=str(session.stream_id), viewer_id=session.sfu_id, remote=remote
        )

    async def add_candidate(self, session: HttpSession, candidate: IceCandidate) -> None:
        await gateway.viewer_candidate(
            stream_id=str(session.stream_id), viewer_id=session.sfu_id, candidate=candidate
        )

    async def end(self, session: HttpSession, reason: Stream.EndReason) -> None:
        await gateway.viewer_close(stream_id=str(session.stream_id), viewer_id=session.sfu_id)
        await whep_viewer_leave(session)


_PEER_OPS: dict[SessionKind, _PeerOps] = {
    SessionKind.WHIP: _PublisherOps(),
    SessionKind.WHEP: _ViewerOps(),
}


def _peer_ops(session: HttpSession) -> _PeerOps:
    return _PEER_OPS[session.kind]


async def _restart_ice(session: HttpSession, fragment: SdpFragment) -> str:
    if not fragment.ice_ufrag or not fragment.ice_pwd:
        raise InvalidInputError(
            "An ICE restart fragment needs the new a=ice-ufrag and a=ice-pwd.",
            code="bad_sdpfrag",
        )
    remote = IceCredentials(ufrag=fragment.ice_ufrag, pwd=fragment.ice_pwd)
    local = await _peer_ops(session).restart_ice(session, remote)
    session.remote_ufrag = remote.ufrag
    session.etag = _new_etag()
    return restart_fragment(answer_sdp=session.answer_sdp, ufrag=local.ufrag, pwd=local.pwd)


async def _check_connected(session: HttpSession) -> None:
    state = None if session.ended else await _peer_ops(session).connection_state(session)
    if connection_lost(state):
        raise ConflictError(
            "This session's connection is lost; start a new one with POST.",
            code="connection_lost",
        )


def _new_etag() -> str:
    return f'"{secrets.token_hex(8)}"'


def _entity_tags(if_match: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in if_match.split(",")}


def _ice_ufrag(sdp: str) -> str | None:
    match = _ICE_UFRAG.search(sdp)
    return match.group(1).strip() if match else None
