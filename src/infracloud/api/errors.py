"""Errors in the shape each OpenStack service uses, chosen by the path's service prefix, so that
openstacksdk finds the message (shared/specs/openstack-api.md section 0)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from infracloud.api import invalid
from infracloud.core.errors import InfracloudError
from infracloud.store.outage import unavailable

log = logging.getLogger(__name__)

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
          413: "Request Entity Too Large",
          415: "Unsupported Media Type", 429: "Too Many Requests",
          500: "Internal Server Error", 503: "Service Unavailable"}
NOVA_KEYS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
             405: "HTTPMethodNotAllowed", 409: "conflictingRequest", 413: "overLimit",
             429: "overLimit", 503: "serviceUnavailable"}
NEUTRON_TYPES = {400: "BadRequest", 401: "NotAuthorized", 403: "PolicyNotAuthorized",
                 404: "NotFound", 409: "Conflict", 413: "OverQuota", 503: "ServiceUnavailable"}
# seconds a client is told to wait when the database cannot be reached (a PostgreSQL restart
# or a standby's promotion takes a few)
RETRY_AFTER = 5
UNAVAILABLE = "The database is unavailable; retry later."

_PREFIX_STYLE = (("/identity", "keystone"), ("/compute", "nova"), ("/volume", "nova"),
                 ("/network", "neutron"), ("/image", "glance"), ("/baremetal", "ironic"))


def style_for(path: str) -> str:
    for prefix, style in _PREFIX_STYLE:
        if path == prefix or path.startswith(prefix + "/"):
            return style
    return "keystone"


def error_body(style: str, status: int, message: str, title: str | None = None) -> dict[str, Any]:
    title = title or TITLES.get(status, "Error")
    if style == "nova":
        key = NOVA_KEYS.get(status, "computeFault")
        return {key: {"code": status, "message": message}}
    if style == "neutron":
        kind = NEUTRON_TYPES.get(status, "NeutronError")
        return {"NeutronError": {"type": kind, "message": message, "detail": ""}}
    if style == "ironic":
        return {"error_message": json.dumps(
            {"faultstring": message, "faultcode": "Client" if status < 500 else "Server",
             "debuginfo": None})}
    return {"error": {"code": status, "title": title, "message": message}}


def error_response(request: Request, status: int, message: str, title: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    style = style_for(request.url.path)
    headers = dict(headers or {})
    if status == 401 and style == "keystone":
        base = str(request.base_url).rstrip("/")
        headers.setdefault("WWW-Authenticate", f'Keystone uri="{base}/identity"')
    return JSONResponse(error_body(style, status, message, title), status_code=status,
                        headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(InfracloudError)
    async def _ours(request: Request, exc: InfracloudError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request failed: %s", exc.message)
        return error_response(request, exc.status, exc.message, exc.title, exc.headers)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # a number past SQLite's 64 bits, or a value past a PostgreSQL column's range, that
        # no model bounded (a query parameter): the caller's input, not the server's fault
        log.info("a value of %s %s is out of range: %s", request.method, request.url.path,
                 type(exc).__name__)
        return error_response(request, 400, "A value in the request is out of range.")

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # the database cannot be reached now (restarting, failing over): 503, and the
        # client retries; any other database error is a bug: the middleware's 500
        reason = unavailable(exc)
        if reason is None:
            raise exc
        log.warning("%s %s: %s", request.method, request.url.path, reason)
        return error_response(request, 503, UNAVAILABLE,
                              headers={"Retry-After": str(RETRY_AFTER)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = invalid.message(style_for(request.url.path), exc, request.url.path)
        return error_response(request, 400, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and message == "Not Found":
            message = f"The resource could not be found: {request.method} {request.url.path}"
        return error_response(request, exc.status_code, message,
                              headers=dict(exc.headers or {}))
