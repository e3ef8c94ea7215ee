"""Webhook receivers for tests. `Hook` takes the network's place (an httpx.MockTransport for
the client factory's `transport`): for tests of what we send. `Recorder` is a small HTTP server
on 127.0.0.1, for processes a test cannot hand a transport (a controller it starts)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.servers import wait_for


class Hook:
    """Records the JSON bodies POSTed to `url` through `transport`; `fail` answers 500 to the
    next N of them. Requests for other URLs go to `peer` (a fake of another server)."""

    def __init__(self, url: str = "http://hook.test/hook",
                 peer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.url = url
        self.peer = peer
        self.bodies: list[dict[str, Any]] = []
        self.fail = 0
        self.changed = threading.Condition()
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) != self.url:
            if self.peer is None:
                return httpx.Response(404, json={})
            return self.peer(request)
        assert request.method == "POST"
        assert request.headers["User-Agent"].startswith("infracloud/")
        with self.changed:
            if self.fail:
                self.fail -= 1
                return httpx.Response(500, json={})
            self.bodies.append(json.loads(request.content))
            self.changed.notify_all()
        return httpx.Response(200, json={})

    def wait(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The bodies, once there are `count` of them."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.bodies) >= count, timeout), \
                f"{len(self.bodies)} of {count} POSTs: {self.bodies}"
            return list(self.bodies)


class Recorder:
    """A webhook receiver on 127.0.0.1: records the JSON bodies POSTed to it; `fail` answers
    500 to the next N posts."""

    def __init__(self, port: int = 0, routes: dict[str, Any] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = 0
        self.routes = routes or {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                route = outer.routes.get(("POST", self.path.split("?")[0]))
                if route is not None:
                    self._answer(200, route)
                    return
                if outer.fail:
                    outer.fail -= 1
                    self._answer(500, {})
                    return
                outer.bodies.append(body)
                self._answer(200, {})

            def do_GET(self) -> None:
                route = outer.routes.get(("GET", self.path.split("?")[0]))
                if route is None:
                    self._answer(404, {})
                    return
                time.sleep(0.2)  # a short long-poll
                self._answer(200, route)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        wait_for(f"{count} POSTs (have {self.bodies})", lambda: len(self.bodies) >= count,
                 timeout, every=0.02)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_markers = itertools.count()


def flush(sink: Hook | Recorder, webhook: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """Everything `webhook` (an ops.alerting.Webhook posting to `sink`) was given so far has
    been delivered: a marker sent through it after them has arrived (one thread posts its
    queue in order). The marker is not kept in `sink.bodies`."""
    marker = {"flush": next(_markers)}
    webhook.send(marker)
    wait_for("the webhook's queue to be delivered", lambda: marker in sink.bodies,
             timeout, every=0.02)
    sink.bodies.remove(marker)
    return sink.bodies
