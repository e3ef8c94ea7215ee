"""The error types every service raises; the API layer renders them in each service's shape."""

from __future__ import annotations


class InfracloudError(Exception):
    """Base class. `status` is the HTTP status the API layer answers with."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(InfracloudError):
    status = 400
    title = "Bad Request"


class Unauthorized(InfracloudError):
    status = 401
    title = "Unauthorized"


class Forbidden(InfracloudError):
    status = 403
    title = "Forbidden"


class NotFound(InfracloudError):
    status = 404
    title = "Not Found"


class MethodNotAllowed(InfracloudError):
    status = 405
    title = "Method Not Allowed"


class NotAcceptable(InfracloudError):
    status = 406
    title = "Not Acceptable"


class Conflict(InfracloudError):
    status = 409
    title = "Conflict"


class Gone(InfracloudError):
    status = 410
    title = "Gone"


class OverLimit(InfracloudError):
    status = 413
    title = "Request Entity Too Large"


class UnsupportedMediaType(InfracloudError):
    status = 415
    title = "Unsupported Media Type"


class RangeNotSatisfiable(InfracloudError):
    status = 416
    title = "Requested Range Not Satisfiable"


class TooManyRequests(InfracloudError):
    """Pass `headers={"Retry-After": seconds}`."""

    status = 429
    title = "Too Many Requests"


class ServiceUnavailable(InfracloudError):
    status = 503
    title = "Service Unavailable"


class ConfigError(InfracloudError):
    """A configuration problem: the CLI prints it on one line and exits 2."""

    status = 400
    title = "Configuration Error"
