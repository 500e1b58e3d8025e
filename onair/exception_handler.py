"""The one place that turns errors into HTTP responses.

Every 4xx/5xx from the API has the same body::

    {"error": {"status": 409, "code": "invalid_transition",
               "message": "Only a live stream can end; this one is idle.", "fields": {}}}

``fields`` maps field names to messages for invalid input (400) and is empty otherwise.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    HttpResponseServerError,
    JsonResponse,
)
from django.template import loader
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from onair.conf import onair_settings
from onair.exceptions import (
    ApplicationError,
    ConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)

HTTP_STATUS: dict[type[ApplicationError], int] = {
    InvalidInputError: status.HTTP_400_BAD_REQUEST,
    NotAuthenticatedError: status.HTTP_401_UNAUTHORIZED,
    PermissionDeniedError: status.HTTP_403_FORBIDDEN,
    NotFoundError: status.HTTP_404_NOT_FOUND,
    ConflictError: status.HTTP_409_CONFLICT,
    PreconditionFailedError: status.HTTP_412_PRECONDITION_FAILED,
    UnsupportedMediaTypeError: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    UnprocessableError: status.HTTP_422_UNPROCESSABLE_ENTITY,
    TooManyRequestsError: status.HTTP_429_TOO_MANY_REQUESTS,
    ServiceUnavailableError: status.HTTP_503_SERVICE_UNAVAILABLE,
}

API_PREFIX = "/api/"


def error_body(
    *, status_code: int, code: str, message: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {
        "error": {"status": status_code, "code": code, "message": message, "fields": fields or {}}
    }


def application_error_status(exc: ApplicationError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return status.HTTP_400_BAD_REQUEST


def application_error_response(exc: ApplicationError) -> JsonResponse:
    """An application error as a plain Django response (views outside DRF: WHIP/WHEP)."""
    status_code = application_error_status(exc)
    response = JsonResponse(
        error_body(status_code=status_code, code=exc.code, message=exc.message, fields=exc.fields),
        status=status_code,
    )
    _retry_after(response, exc)
    return response


def _retry_after(response: HttpResponse, exc: ApplicationError) -> None:
    if isinstance(exc, TooManyRequestsError | ServiceUnavailableError):
        response["Retry-After"] = str(exc.retry_after)


def _field_messages(detail: Any) -> dict[str, list[str]]:
    """Flatten DRF's nested ``{"field": ["msg", ...]}`` detail into strings per field."""
    fields: dict[str, list[str]] = {}
    for name, value in detail.items():
        if isinstance(value, dict):
            for sub_name, messages in _field_messages(value).items():
                fields[f"{name}.{sub_name}"] = messages
        elif isinstance(value, list):
            fields[name] = [str(item) for item in value]
        else:
            fields[name] = [str(value)]
    return fields


def _drf_error(exc: drf_exceptions.APIException) -> tuple[str, str, dict[str, list[str]]]:
    if isinstance(exc, drf_exceptions.ValidationError):
        if isinstance(exc.detail, dict):
            fields = _field_messages(exc.detail)
            non_field = fields.get("non_field_errors")
            message = non_field[0] if non_field else "Some fields are invalid."
            return "invalid", message, fields
        messages = [str(item) for item in exc.detail] if isinstance(exc.detail, list) else []
        return "invalid", messages[0] if messages else "Invalid input.", {}
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    return str(code), str(exc.detail), {}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's ``EXCEPTION_HANDLER``: application errors and DRF errors, one body shape."""
    if isinstance(exc, ApplicationError):
        status_code = application_error_status(exc)
        refusal = Response(
            error_body(
                status_code=status_code, code=exc.code, message=exc.message, fields=exc.fields
            ),
            status=status_code,
        )
        _retry_after(refusal, exc)
        return refusal
    if isinstance(exc, RecursionError):
        # Python's json recurses once per nesting level, and DRF's JSON parser (every view's,
        # whatever its parser_classes) catches only ValueError: "[" * 50000 lands here.
        exc = drf_exceptions.ParseError("JSON parse error - the document is nested too deeply.")
    if isinstance(exc, RequestDataTooBig):
        # Django's DATA_UPLOAD_MAX_MEMORY_SIZE, hit while DRF reads the body.
        return Response(
            error_body(
                status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                code="too_large",
                message=f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            ),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    assert isinstance(exc, drf_exceptions.APIException)
    code, message, fields = _drf_error(exc)
    response.data = error_body(
        status_code=response.status_code, code=code, message=message, fields=fields
    )
    return response


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: JSON under /api/, the HTML page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse(
            error_body(status_code=404, code="not_found", message="No such API endpoint."),
            status=404,
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: JSON under /api/, the site's page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse(
            error_body(status_code=500, code="server_error", message="Internal server error."),
            status=500,
        )
    return HttpResponseServerError(_error_page("500.html"))


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler400`` (a Host not in ALLOWED_HOSTS, a malformed request): the site's page."""
    return HttpResponseBadRequest(_error_page("400.html"))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """``CSRF_FAILURE_VIEW``: a form sent without its token (a page left open past its
    session, cookies off) gets the site's page saying what to do, not Django's."""
    return HttpResponseForbidden(_error_page("403_csrf.html"))


def _error_page(template: str) -> str:
    # Without the request's context processors (as Django's own handlers): the failure may
    # be in what they read (the session, the database), or the request may be unsafe to use.
    return loader.render_to_string(template, {"onair": onair_settings()})
