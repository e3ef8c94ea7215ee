"""A request id on every response and every log line, and one access-log line per request.
Plain ASGI (no per-request task or body buffering)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from infracloud.api.errors import error_body, style_for
from infracloud.core.ids import request_id
from infracloud.ops.logging import request_id_var

access = logging.getLogger("infracloud.access")

Scope = dict[str, Any]


class RequestIdMiddleware:
    def __init__(self, app: Any, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id()
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 0
        header = (b"x-openstack-request-id", rid.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Anything the routers' handlers did not turn into an answer: log it with the
            # request id and answer 500 in the service's shape (never a traceback).
            access.exception("unexpected error serving %s %s", scope["method"], scope["path"],
                             extra={"request_id": rid})
            if status == 0:
                await _send_crash(scope, send_with_id)
        finally:
            if self.access_log:
                client = scope.get("client")
                access.info(
                    "%s %s %s", scope["method"], scope["path"], status,
                    extra={"method": scope["method"], "path": scope["path"], "status": status,
                           "ms": round((time.perf_counter() - started) * 1000, 2),
                           "client": client[0] if client else None, "request_id": rid})
            request_id_var.reset(token)


async def _send_crash(scope: Scope, send: Any) -> None:
    body = json.dumps(error_body(style_for(scope["path"]), 500, "An unexpected error prevented "
                                 "the server from fulfilling your request.")).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
