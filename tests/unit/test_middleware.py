"""The API middleware: a request id on every answer, and `Connection: close` on every answer
while the process stops (no keep-alive client holds up a graceful shutdown)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from infracloud.api.middleware import RequestIdMiddleware
from infracloud.core import lifecycle


def test_answers_close_their_connection_while_the_process_stops() -> None:
    app = FastAPI()

    @app.get("/thing")
    def thing() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(RequestIdMiddleware, access_log=False)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as client:
            return await client.get("/thing")

    assert lifecycle.stopping.is_set() is False
    running = asyncio.run(call())
    assert running.headers["x-openstack-request-id"].startswith("req-")
    assert "connection" not in running.headers  # keep-alive while serving
    lifecycle.stopping.set()
    try:
        stopping = asyncio.run(call())
    finally:
        lifecycle.stopping.clear()
    assert stopping.status_code == 200 and stopping.headers["connection"] == "close"
