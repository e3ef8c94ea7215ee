"""What one caller may hold of the controller: the size of a request body (plain ASGI: a 413
before the body is read, from its Content-Length or as a chunked body streams past the
limit) and the number of long-polls one client address holds at once."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Query, Request

from infracloud.api.errors import error_body, style_for
from infracloud.core.errors import BadRequest, TooManyRequests

Scope = dict[str, Any]

# Image data is streamed to the store and limited by images.max_image_size and the quota.
UNLIMITED_BODIES = re.compile(r"^/image/v2/images/[^/]+/(file|stage)$")
# a server's snapshot, uploaded by its host's agent (api/agent.py): image data too
SNAPSHOT_BODIES = re.compile(r"^/agent/v1/hosts/[^/]+/snapshots/[^/]+$")


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Bodies larger than `max_bytes` get a 413 in the service's error shape; the rest of the
    body is never read."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"] == "PUT" and (
                UNLIMITED_BODIES.match(scope["path"]) or SNAPSHOT_BODIES.match(scope["path"]))):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(scope, send, self.max_bytes)
            return
        seen = 0
        refused = False
        started = False

        async def counted() -> dict[str, Any]:
            nonlocal seen, refused
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    raise _TooLarge
            return message

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal started
            if refused:  # the app's answer to the error it was given: ours instead
                return
            started = True
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, guarded)
        if refused and not started:
            await _refuse(scope, send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, send: Any, limit: int) -> None:
    message = f"The request body is larger than {limit} bytes."
    body = json.dumps(error_body(style_for(scope["path"]), 413, message)).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class LongPolls:
    """Concurrent long-polls per client address, at most `per_client` each."""

    def __init__(self, per_client: int) -> None:
        self.per_client = per_client
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, client: str | None) -> Iterator[None]:
        key = client or "?"
        with self._lock:
            if self._held[key] >= self.per_client:
                raise TooManyRequests(
                    f"At most {self.per_client} long-polls (wait=) at once from one address.",
                    headers={"Retry-After": "1"})
            self._held[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]

    def held(self, client: str | None) -> int:
        with self._lock:
            return self._held.get(client or "?", 0)


# Numeric query values: finite and not negative (FastAPI takes "nan" and "inf" for a float).
Seconds = Annotated[float, Query(ge=0, allow_inf_nan=False,
                                 description="seconds: a finite number, 0 or more")]
Cursor = Annotated[int | None, Query(ge=0, description="an event id")]


def query_count(request: Request, name: str) -> int | None:
    """A whole number of the query string read by hand, 0 or more (else a 400 naming it)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw!r}.") from None
    if value < 0:
        raise BadRequest(f"{name} must be 0 or more.")
    return value


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None
