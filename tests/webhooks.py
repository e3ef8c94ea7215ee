"""A webhook receiver for tests: a small HTTP server on 127.0.0.1 that records the JSON
bodies POSTed to it (and can play a tiny fake of other servers through `routes`)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import wait_for


class Recorder:
    """A webhook receiver on 127.0.0.1: records the JSON bodies POSTed to it; `fail` answers
    500 to the next N posts."""

    def __init__(self, port: int = 0, routes: dict[str, Any] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = 0
        self._markers = itertools.count()
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

    def flush(self, webhook: Any, timeout: float = 10) -> list[dict[str, Any]]:
        """Everything `webhook` (an ops.alerts.Webhook posting here) was given so far has
        been delivered: a marker sent through it after them has arrived (one thread posts
        its queue in order). The marker is not kept in `bodies`."""
        marker = {"flush": next(self._markers)}
        webhook.send(marker)
        wait_for("the webhook's queue to be delivered", lambda: marker in self.bodies,
                 timeout, every=0.02)
        self.bodies.remove(marker)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
