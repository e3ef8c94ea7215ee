"""A request id on every response and every log line, and one access-log line per request.
Plain ASGI (no per-request task or body buffering)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from infracloud.api.errors import RETRY_AFTER, UNAVAILABLE, error_body, style_for
from infracloud.core import lifecycle
from infracloud.core.ids import request_id
from infracloud.ops import context
from infracloud.ops.logging import request_id_var
from infracloud.store.outage import unavailable

access = logging.getLogger("infracloud.access")

Scope = dict[str, Any]


WriteHook = Callable[[str, str, "str | None", int, context.Actor, "str | None"], None]
Observer = Callable[[str, "str | None", int, float], None]


class RequestIdMiddleware:
    """`on_write(method, path, route, status, actor, client)` is told of every answered
    request (the events keep the writes); `observe(method, route, status, seconds)` of every
    request (the metrics)."""

    def __init__(self, app: Any, *, access_log: bool = True, on_write: WriteHook | None = None,
                 observe: Observer | None = None) -> None:
        self.app = app
        self.access_log = access_log
        self.on_write = on_write
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id()
        token = request_id_var.set(rid)
        client = scope.get("client")
        actor = context.Actor(name="anonymous", request_id=rid,
                              client=client[0] if client else None)
        actor_token = context.begin(actor)
        started = time.perf_counter()
        status = 0
        header = (b"x-openstack-request-id", rid.encode())
        # Nova's answers carry the id under its own name too (openstacksdk reads either)
        compute = scope["path"].startswith("/compute")

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
                if compute:
                    message["headers"].append((b"x-compute-request-id", rid.encode()))
                if lifecycle.stopping.is_set():  # no keep-alive client holds up the shutdown
                    message["headers"].append((b"connection", b"close"))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Anything the routers' handlers did not turn into an answer: log it with the
            # request id and answer 500 in the service's shape (never a traceback); the
            # database out of reach (a streamed answer's query, say): 503, one line.
            reason = unavailable(exc)
            if reason is not None:
                access.warning("%s %s: %s", scope["method"], scope["path"], reason,
                               extra={"request_id": rid})
                if status == 0:
                    await _send_error(scope, send_with_id, 503, UNAVAILABLE,
                                      [(b"retry-after", str(RETRY_AFTER).encode())])
            else:
                access.exception("unexpected error serving %s %s", scope["method"],
                                 scope["path"], extra={"request_id": rid})
                if status == 0:
                    await _send_error(scope, send_with_id, 500, "An unexpected error "
                                      "prevented the server from fulfilling your request.")
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            if self.access_log:
                first = actor.touched[0] if actor.touched else None
                query = redacted_query(scope.get("query_string", b""))
                target = f"{scope['path']}?{query}" if query else scope["path"]
                access.info(
                    "%s %s %s", scope["method"], target, status,
                    extra={"method": scope["method"], "path": scope["path"], "query": query,
                           "status": status,
                           "ms": round(seconds * 1000, 2), "route": route,
                           "client": client[0] if client else None, "request_id": rid,
                           "user": actor.name if actor.user_id else None,
                           "resource_id": first.resource_id if first else None})
            if self.observe is not None:
                self.observe(scope["method"], route, status, seconds)
            if self.on_write is not None:
                try:
                    self.on_write(scope["method"], scope["path"], route, status, actor,
                                  client[0] if client else None)
                except Exception:
                    access.exception("could not record the API event", extra={
                        "request_id": rid})
            context.end(actor_token)
            request_id_var.reset(token)


SECRET_NAMES = re.compile(r"token|passw|secret|credential|signature|auth|api_?key|access_?key",
                          re.IGNORECASE)


def redacted_query(raw: bytes) -> str:
    """The query string for the log, values of names that may carry a secret (token,
    password, secret, credential, signature, auth, API or access key) replaced by `***`."""
    if not raw:
        return ""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, "***" if SECRET_NAMES.search(k) else v) for k, v in pairs],
                     safe="*:/,")


def route_template(scope: Scope) -> str | None:
    """The template of the route that served the request (`/compute/v2.1/servers/{server_id}`).
    A route of a router included in another router knows only its own part: the prefixes
    (which hold no parameters here) come from the request's path."""
    fmt = getattr(scope.get("route"), "path_format", None)
    if fmt is None:
        return None
    path = scope["path"]
    own = fmt.count("/")
    if path.count("/") <= own:
        return str(fmt)
    parts = path.split("/")
    return "/".join(parts[: len(parts) - own]) + fmt


async def _send_error(scope: Scope, send: Any, status: int, message: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error_body(style_for(scope["path"]), status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
