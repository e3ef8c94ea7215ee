"""The pool's SSH readiness probe against a real SSH server (asyncssh) on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import asyncssh
import pytest

from infracloud.pool.probe import FakeProber, Probe, ProbeFailed, Prober
from tests.servers import free_port


class SSHServer:
    """An asyncssh server on its own loop thread, which can be started late or stopped."""

    def __init__(self, port: int, key_types: tuple[str, ...] = ("ssh-ed25519",
                                                                 "ecdsa-sha2-nistp256")) -> None:
        self.port = port
        self.keys = [asyncssh.generate_private_key(t) for t in key_types]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Any = None

    @property
    def public_lines(self) -> list[str]:
        return [" ".join(k.export_public_key().decode().split()[:2]) for k in self.keys]

    def start(self) -> None:
        async def go() -> Any:
            return await asyncssh.create_server(asyncssh.SSHServer, "127.0.0.1", self.port,
                                                server_host_keys=self.keys)

        self.server = asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def start_later(self, delay: float) -> None:
        threading.Timer(delay, self.start).start()

    def stop(self) -> None:
        async def go() -> None:
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def prober() -> Iterator[Prober]:
    p = Prober()
    yield p
    p.close()


@pytest.fixture
def ssh() -> Iterator[SSHServer]:
    server = SSHServer(free_port())
    server.start()
    yield server
    server.stop()


def test_scan_returns_every_host_key(prober: Prober, ssh: SSHServer) -> None:
    keys = prober.scan("127.0.0.1", ssh.port, 10).result(15)
    assert keys == ssh.public_lines  # ed25519 first, then ecdsa; no comments
    assert [k.split()[0] for k in keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]


def test_scan_takes_the_key_types_the_server_has(prober: Prober) -> None:
    server = SSHServer(free_port(), ("ecdsa-sha2-nistp256", "ssh-rsa"))
    server.start()
    try:
        keys = prober.scan("127.0.0.1", server.port, 10).result(15)
    finally:
        server.stop()
    assert [k.split()[0] for k in keys] == ["ecdsa-sha2-nistp256", "ssh-rsa"]
    assert sorted(keys) == sorted(server.public_lines)


def test_a_port_that_opens_late_is_scanned(prober: Prober) -> None:
    server = SSHServer(free_port())
    started = time.monotonic()
    server.start_later(1.0)
    try:
        keys = prober.scan("127.0.0.1", server.port, 10).result(15)
    finally:
        server.stop()
    assert keys == server.public_lines
    assert 0.9 < time.monotonic() - started < 4


def test_a_closed_port_fails_after_the_timeout(prober: Prober) -> None:
    port = free_port()
    started = time.monotonic()
    future = prober.scan("127.0.0.1", port, 1.5)
    with pytest.raises(ProbeFailed) as caught:
        future.result(10)
    took = time.monotonic() - started
    assert 1.4 < took < 3, took
    assert caught.value.reason == f"ssh on 127.0.0.1:{port}: connection refused for 1.5 s"
    assert "\n" not in str(caught.value)


def test_a_port_that_closes_without_ssh_fails(prober: Prober) -> None:
    """Something accepts and hangs up at once (a half-started sshd, a forwarder)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def serve() -> asyncio.Server:
        return await asyncio.start_server(hang_up, "127.0.0.1", 0)

    server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ProbeFailed, match=r": connection closed for 1 s$"):
            prober.scan("127.0.0.1", port, 1).result(10)
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_many_scans_at_once(ssh: SSHServer) -> None:
    prober = Prober(concurrency=8)
    try:
        futures = [prober.scan("127.0.0.1", ssh.port, 20) for _ in range(40)]
        results = [f.result(60) for f in futures]
    finally:
        prober.close()
    assert all(r == ssh.public_lines for r in results)


def test_close_fails_pending_scans() -> None:
    prober = Prober()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says a word
        silent.settimeout(10)
        future = prober.scan("127.0.0.1", silent.getsockname()[1], 30)
        connection, _ = silent.accept()  # the scan is under way: waiting for a banner
        with connection:
            started = time.monotonic()
            prober.close()
    assert time.monotonic() - started < 5
    with pytest.raises(ProbeFailed, match="closed"):
        future.result(1)
    with pytest.raises(ProbeFailed, match="closed"):
        prober.scan("127.0.0.1", 22, 1).result(1)
    prober.close()  # twice is fine


def test_fake_prober() -> None:
    fake = FakeProber()
    probe: Probe = fake
    assert probe.scan("127.200.0.1", 22, 5).result(0) == ["ssh-ed25519 AAAAfake127.200.0.1"]
    fake.fail_hosts.add("127.200.0.2")
    future = probe.scan("127.200.0.2", 2222, 5)
    assert future.done()
    with pytest.raises(ProbeFailed):
        future.result(0)
    assert fake.scanned == [("127.200.0.1", 22), ("127.200.0.2", 2222)]
    probe.close()
