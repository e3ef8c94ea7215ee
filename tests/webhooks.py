"""A webhook receiver for tests: a small HTTP server on 127.0.0.1 that records the JSON
bodies POSTed to it (and can play a tiny fake of other servers through `routes`)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count:
            assert time.monotonic() < deadline, f"{len(self.bodies)} of {count} POSTs: " \
                                                f"{self.bodies}"
            time.sleep(0.02)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
