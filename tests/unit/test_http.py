"""The outbound HTTP client factory: who we say we are, how long we wait, how TLS is verified,
that a connection that could not be made is tried again, and that tests can take the network's
place."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from infracloud.api.tls import ensure_certificates
from infracloud.clients import http


def _capture() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    return seen, httpx.MockTransport(handler)


def test_every_request_says_which_infracloud_and_which_part_of_it_sends_it() -> None:
    seen, transport = _capture()
    with http.client("agent", transport=transport, headers={"X-Agent-Token": "t"}) as c:
        assert c.get("http://controller.test/x").json() == {"ok": True}
    (request,) = seen
    assert request.headers["User-Agent"] == \
        f"infracloud/{metadata.version('infracloud')} (agent)"
    assert request.headers["X-Agent-Token"] == "t"


def test_the_transport_replaces_the_network_even_with_a_proxy_in_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9/")
    seen, transport = _capture()
    with http.client("alerts", transport=transport, base_url="http://hook.test/v1") as c:
        c.post("/hook", json={"rule": "r"})
    assert [(r.method, str(r.url), r.content) for r in seen] == [
        ("POST", "http://hook.test/v1/hook", b'{"rule":"r"}')]


def test_timeouts_default_to_30_s_and_connecting_never_waits_more_than_10() -> None:
    seen, transport = _capture()
    with http.client("cli", transport=transport) as c:
        c.get("http://x.test/")
    assert seen[0].extensions["timeout"] == {"connect": 10.0, "read": 30.0, "write": 30.0,
                                             "pool": 30.0}
    assert http.timeouts(60) == httpx.Timeout(60, connect=10)
    assert http.timeouts(2) == httpx.Timeout(2)
    long_poll = httpx.Timeout(10, read=50)
    assert http.timeouts(long_poll) is long_poll
    with http.client("agent", transport=transport, timeout=long_poll) as c:
        c.get("http://x.test/", timeout=3)  # a call may still say otherwise
    assert seen[1].extensions["timeout"]["read"] == 3


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection the real transport tries; each is refused."""
    tried: list[tuple[str, int]] = []

    def refuse(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        tried.append((host, port))
        raise httpcore.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", refuse)
    return tried


def test_a_refused_connection_is_tried_again_before_the_call_fails(
        connects: list[tuple[str, int]]) -> None:
    with http.client("pool", timeout=5) as c, pytest.raises(httpx.ConnectError):
        c.get("http://127.0.0.1:9/x")
    assert connects == [("127.0.0.1", 9)] * (1 + http.RETRIES)
    connects.clear()
    with http.client("pool", timeout=5, retries=0) as c, pytest.raises(httpx.ConnectError):
        c.get("http://127.0.0.1:9/x")
    assert connects == [("127.0.0.1", 9)]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTPS server whose certificate a CA of its own signed: (url, CA file)."""
    ca, cert, key = ensure_certificates(tmp_path / "tls", ["127.0.0.1"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", ca
    server.shutdown()
    server.server_close()


def test_a_ca_file_is_trusted_and_the_system_store_alone_is_not(
        tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    for verify in (ca, str(ca)):
        with http.client("cli", verify=verify, timeout=10) as c:
            assert c.get(url).status_code == 204
    with http.client("cli", verify=True, timeout=10, retries=0) as c, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        c.get(url)
    with http.client("cli", verify=False, timeout=10) as c:  # a cloud's `verify: false`
        assert c.get(url).status_code == 204


def test_tls_verify_reads_a_ca_file_once_and_says_which_file_it_cannot_use(
        tmp_path: Path) -> None:
    ca, _, _ = ensure_certificates(tmp_path / "tls", ["127.0.0.1"])
    context = http.tls_verify(ca)
    assert isinstance(context, ssl.SSLContext)
    assert len(context.get_ca_certs()) == 1
    assert http.tls_verify(context) is context
    assert http.tls_verify(False) is False
    assert isinstance(http.tls_verify(True), ssl.SSLContext)
    missing = tmp_path / "nope.pem"
    with pytest.raises(http.ClientError, match=f"^CA file {missing}: cannot use it: "):
        http.tls_verify(missing)
    with pytest.raises(http.ClientError, match="cannot use it"):
        http.client("cli", verify=str(missing))
