"""OnAir's one exception hierarchy. Services raise these; ``onair.exception_handler`` maps
them to HTTP responses, and the signaling consumers map them to ``error`` messages.
"""

from __future__ import annotations


class ApplicationError(Exception):
    """A request the application refuses, with a stable machine-readable ``code``."""

    code = "error"

    def __init__(
        self, message: str, *, code: str | None = None, fields: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fields = fields or {}


class NotAuthenticatedError(ApplicationError):
    """The request carries no credentials, or wrong ones (HTTP 401)."""

    code = "not_authenticated"


class InvalidInputError(ApplicationError):
    """The input is malformed or breaks a rule about its values (HTTP 400)."""

    code = "invalid"


class PermissionDeniedError(ApplicationError):
    """The caller is known but may not do this (HTTP 403)."""

    code = "permission_denied"


class NotFoundError(ApplicationError):
    """No such object, or one the caller may not know about (HTTP 404)."""

    code = "not_found"


class ConflictError(ApplicationError):
    """The object's current state forbids the request, e.g. ending an idle stream (HTTP 409)."""

    code = "conflict"


class PreconditionFailedError(ApplicationError):
    """A conditional request (``If-Match``) names a version that is not current (HTTP 412)."""

    code = "precondition_failed"


class UnsupportedMediaTypeError(ApplicationError):
    """The request body has a content type the endpoint does not take (HTTP 415)."""

    code = "unsupported_media_type"


class UnprocessableError(ApplicationError):
    """The request is well-formed but asks for something this resource cannot do (HTTP 422)."""

    code = "unprocessable"


class _RetryLaterError(ApplicationError):
    """A refusal that passes: the answer carries ``Retry-After`` (seconds)."""

    retry_after = 30

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None):
        super().__init__(message, code=code)
        if retry_after is not None:
            self.retry_after = retry_after


class TooManyRequestsError(_RetryLaterError):
    """The client is over one of its own limits, e.g. concurrent sessions (HTTP 429)."""

    code = "too_many_requests"


class ServiceUnavailableError(_RetryLaterError):
    """The server, or this resource, has no room now (HTTP 503)."""

    code = "unavailable"
