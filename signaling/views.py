"""WHIP (RFC 9725) and WHEP endpoints over HTTP, and the WHEP player page.

``/whip/<slug>`` and ``/whep/<slug>`` take an SDP offer (``POST``) and answer ``201
Created`` with the session's ``Location`` and ``ETag``; the session resource takes
``PATCH`` (trickle ICE, or an ICE restart with ``If-Match: "*"``) and ``DELETE``.
Every response carries CORS headers, so browser clients on other origins work, and
errors have the API's JSON body (``onair.exception_handler``). Thin by design: the
rules are in ``signaling.http_sessions``; these views parse HTTP and shape responses.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.log import log_response
from django.views.decorators.csrf import csrf_exempt

from broadcast.models import Stream
from onair.exception_handler import application_error_response, error_body
from onair.exceptions import (
    ApplicationError,
    InvalidInputError,
    NotAuthenticatedError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)
from onair.logcontext import log_context_set, public_session_id
from onair.metrics import http_session_requests
from signaling.groups import stream_payload
from signaling.http_session_store import HttpSession, SessionKind
from signaling.http_sessions import (
    http_session_end,
    http_session_get,
    http_session_patch,
    whep_session_start,
    whep_stream_get,
    whip_session_start,
    whip_stream_get,
)
from signaling.ice import PeerRole, client_ice_fields, ice_servers, link_header
from signaling.sdpfrag import MEDIA_TYPE as SDPFRAG
from signaling.sdpfrag import parse_fragment

SDP = "application/sdp"
MAX_BODY_BYTES = 64 * 1024
ENDPOINT_METHODS = ("POST", "OPTIONS")
SESSION_METHODS = ("PATCH", "DELETE", "OPTIONS")
STATE_METHODS = ("GET", "OPTIONS")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After",
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "86400",
}

Handler = Callable[[], Awaitable[HttpResponse]]


@csrf_exempt
async def whip_endpoint(request: HttpRequest, slug: str) -> HttpResponse:
    async def post() -> HttpResponse:
        log_context_set(stream=slug, session=public_session_id("whip"))
        stream, key_id = await whip_stream_get(slug=slug, bearer=_bearer(request))
        session = await whip_session_start(
            stream=stream, offer_sdp=_body(request, SDP), key_id=key_id, client=_client(request)
        )
        return _created(session)

    return await _dispatch(
        request, SessionKind.WHIP, ENDPOINT_METHODS, {"POST": post}, accept_post=True
    )


@csrf_exempt
async def whep_endpoint(request: HttpRequest, slug: str) -> HttpResponse:
    async def post() -> HttpResponse:
        log_context_set(stream=slug, session=public_session_id("whep"))
        user = await request.auser()
        stream, key_id = await whep_stream_get(slug=slug, user=user, bearer=_bearer(request))
        offer = _body(request, SDP)
        session = await whep_session_start(
            stream=stream, offer_sdp=offer, user=user, client=_client(request), key_id=key_id
        )
        return _created(session)

    return await _dispatch(
        request, SessionKind.WHEP, ENDPOINT_METHODS, {"POST": post}, accept_post=True
    )


@csrf_exempt
async def whip_session(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    return await _session(request, SessionKind.WHIP, slug, token)


@csrf_exempt
async def whep_session(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    return await _session(request, SessionKind.WHEP, slug, token)


@csrf_exempt
async def whep_state(request: HttpRequest, slug: str) -> HttpResponse:
    """``GET``: whether the broadcast is live or ended (and who or what ended it), for a
    WHEP player whose connection went away: no signaling socket tells it. Who may watch
    may ask (a private stream's bearer token as for ``POST``)."""

    async def get() -> HttpResponse:
        user = await request.auser()
        stream, _ = await whep_stream_get(slug=slug, user=user, bearer=_bearer(request))
        payload = stream_payload(stream)
        return JsonResponse({field: payload[field] for field in _STATE_FIELDS})

    return await _dispatch(request, SessionKind.WHEP, STATE_METHODS, {"GET": get})


_STATE_FIELDS = ("slug", "state", "started_at", "ended_at", "end_reason")


def whep_player(request: HttpRequest, slug: str) -> HttpResponse:
    """A minimal WHEP player for ``/whep/<slug>``; a private stream asks for a token."""
    config = {
        "endpoint": f"/whep/{slug}",
        "state_url": f"/whep/{slug}/state",
        "end_reasons": dict(Stream.EndReason.choices),
        **client_ice_fields(user=uuid.uuid4().hex, role=PeerRole.VIEWER),
    }
    return render(request, "signaling/whep_player.html", {"slug": slug, "player_config": config})


async def _session(request: HttpRequest, kind: SessionKind, slug: str, token: str) -> HttpResponse:
    async def patch() -> HttpResponse:
        session = await _session_get(kind, slug, token)
        fragment = parse_fragment(_body(request, SDPFRAG))
        restart = await http_session_patch(
            session=session, fragment=fragment, if_match=request.headers.get("If-Match")
        )
        if restart is None:
            return HttpResponse(status=204)
        response = HttpResponse(restart, status=200, content_type=SDPFRAG)
        response["ETag"] = session.etag
        return response

    async def delete() -> HttpResponse:
        session = await _session_get(kind, slug, token)
        await http_session_end(session=session)
        return HttpResponse(status=200)

    return await _dispatch(request, kind, SESSION_METHODS, {"PATCH": patch, "DELETE": delete})


async def _session_get(kind: SessionKind, slug: str, token: str) -> HttpSession:
    """The session of a request to its URL; the request's log lines carry its public id."""
    session = await http_session_get(kind=kind, slug=slug, token=token)
    log_context_set(stream=slug, session=session.log_id or None)
    return session


async def _dispatch(
    request: HttpRequest,
    kind: SessionKind,
    allowed: tuple[str, ...],
    handlers: dict[str, Handler],
    *,
    accept_post: bool = False,
) -> HttpResponse:
    method = request.method or ""
    if method == "OPTIONS":
        response = HttpResponse(status=204)
        _set_headers(response, PREFLIGHT_HEADERS)
        response["Access-Control-Allow-Methods"] = ", ".join(allowed)
        if accept_post:
            response["Accept-Post"] = SDP
        else:
            response["Accept-Patch"] = SDPFRAG
    elif method not in handlers:
        response = JsonResponse(
            error_body(
                status_code=405,
                code="method_not_allowed",
                message=f"Use {' or '.join(allowed)} here.",
            ),
            status=405,
        )
    else:
        try:
            response = await handlers[method]()
        except ApplicationError as exc:
            response = application_error_response(exc)
            if isinstance(exc, ServiceUnavailableError):
                # A full server or stream is this client's answer, not a server failure:
                # a warning, where Django would log any 5xx as an error.
                log_response(
                    "Service Unavailable (%s): %s",
                    exc.code,
                    request.path,
                    response=response,
                    request=request,
                    level="warning",
                )
            if isinstance(exc, NotAuthenticatedError):
                response["WWW-Authenticate"] = 'Bearer realm="OnAir"'
    response["Allow"] = ", ".join(allowed)
    _set_headers(response, CORS_HEADERS)
    http_session_requests.labels(
        kind.value, method if method in allowed else "other", str(response.status_code)
    ).inc()
    return response


def _set_headers(response: HttpResponse, headers: dict[str, str]) -> None:
    for name, value in headers.items():
        response[name] = value


def _created(session: HttpSession) -> HttpResponse:
    response = HttpResponse(session.answer_sdp, status=201, content_type=SDP)
    response["Location"] = session.path
    response["ETag"] = session.etag
    response["Accept-Patch"] = SDPFRAG
    servers = ice_servers(user=uuid.uuid4().hex)
    if servers:
        response["Link"] = link_header(servers)
    return response


def _client(request: HttpRequest) -> str | None:
    """The client's address: the peer's, or with ``daphne --proxy-headers`` the one the
    proxy put in X-Forwarded-For (daphne resolves it; the header is never read here)."""
    return request.META.get("REMOTE_ADDR") or None


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def _body(request: HttpRequest, media_type: str) -> str:
    if (request.content_type or "").lower() != media_type:
        raise UnsupportedMediaTypeError(
            f"Send the body as {media_type} (this one is {request.content_type or 'untyped'}).",
        )
    too_large = InvalidInputError(
        f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.", code="too_large"
    )
    try:
        body = request.body
    except RequestDataTooBig:  # past DATA_UPLOAD_MAX_MEMORY_SIZE: Django will not read it
        raise too_large from None
    if len(body) > MAX_BODY_BYTES:
        raise too_large
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError("The body is not UTF-8 text.", code="bad_encoding") from exc
    if not text.strip():
        raise InvalidInputError(f"The body is empty; send the {media_type}.", code="empty_body")
    return text
