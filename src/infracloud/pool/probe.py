"""SSH readiness: a node is ready when its SSH server answers; what it answers with (its host
keys) goes to the CI system, as nodepool's nodescan does.

`Prober` runs every scan on one asyncio event loop of its own (a daemon thread), a bounded
number at once, and hands results back as `concurrent.futures.Future`s, so the pool's threads
never block on SSH. The keys come from SSH handshakes that stop after key exchange: the first
offers every host key algorithm we know in our order of preference, so the server answers
with the first it has; the next offers only those after it, and so on. Three key types cost
at most three handshakes (ssh-keyscan does one per type)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from typing import Protocol

import asyncssh

# the key types collected, in order of preference: one public-key line each
KEY_TYPES: tuple[tuple[str, ...], ...] = (
    ("ssh-ed25519",),
    ("ecdsa-sha2-nistp256",),
    ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
)
RETRY_EVERY = 0.5  # seconds between attempts while the port refuses or closes
ATTEMPT_TIMEOUT = 10.0  # seconds one handshake may take


class ProbeFailed(Exception):
    """The host did not answer SSH in time (or answered with no key we know)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Probe(Protocol):
    def scan(self, host: str, port: int, timeout: float
             ) -> concurrent.futures.Future[list[str]]: ...

    def close(self) -> None: ...


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _key_line(key: asyncssh.SSHKey) -> str:
    """"type base64", without a comment."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no SSH handshake"
    if isinstance(exc, (asyncssh.ConnectionLost, ConnectionResetError, EOFError,
                        asyncio.IncompleteReadError)):
        return "connection closed"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"disconnected: {exc.reason}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _NoMoreKeys(Exception):
    """The server has none of the host key types offered."""


class Prober:
    """SSH host-key scans on one event loop thread, `concurrency` at once."""

    def __init__(self, concurrency: int = 64) -> None:
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._pending: dict[concurrent.futures.Future[list[str]],
                            asyncio.Task[list[str]] | None] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop.run_forever, name="ssh-prober",
                                        daemon=True)
        self._thread.start()

    def scan(self, host: str, port: int, timeout: float
             ) -> concurrent.futures.Future[list[str]]:
        """The host keys of the SSH server on host:port, once it answers (retrying while it
        refuses or closes); ProbeFailed when it has not after `timeout` seconds."""
        future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # no cancel(): it would skip the bookkeeping
        with self._lock:
            if self._closed:
                future.set_exception(ProbeFailed(f"ssh on {_where(host, port)}: prober closed"))
                return future
            self._pending[future] = None
        self._loop.call_soon_threadsafe(self._start, future, host, port, timeout)
        return future

    def close(self) -> None:
        """Stop the loop; scans not finished fail with ProbeFailed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True

        async def stop() -> None:
            with self._lock:
                tasks = [t for t in self._pending.values() if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with self._lock:
            left, self._pending = list(self._pending), {}
        for future in left:
            if not future.done():
                future.set_exception(ProbeFailed("prober closed before the scan finished"))
        if not self._thread.is_alive():
            self._loop.close()

    # ---- on the loop's thread ----------------------------------------------------------------

    def _start(self, future: concurrent.futures.Future[list[str]], host: str, port: int,
               timeout: float) -> None:
        if future.done():  # failed by close() already
            return
        deadline = self._loop.time() + timeout
        task = self._loop.create_task(self._scan(host, port, timeout, deadline))
        with self._lock:
            self._pending[future] = task

        def done(task: asyncio.Task[list[str]]) -> None:
            with self._lock:
                self._pending.pop(future, None)
            if future.done():
                return
            if task.cancelled():
                future.set_exception(ProbeFailed(
                    f"ssh on {_where(host, port)}: prober closed before the scan finished"))
            elif (exc := task.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(task.result())

        task.add_done_callback(done)

    async def _scan(self, host: str, port: int, timeout: float, deadline: float) -> list[str]:
        async with self._semaphore:
            keys: list[str] = []
            groups = list(KEY_TYPES)
            while groups:
                offered = [alg for group in groups for alg in group]
                try:
                    key = await self._handshake(host, port, offered, timeout, deadline)
                except _NoMoreKeys:
                    if keys:
                        break
                    raise ProbeFailed(f"ssh on {_where(host, port)}: offers none of the host "
                                      f"key types {', '.join(g[0] for g in KEY_TYPES)}") from None
                except ProbeFailed:
                    if keys:  # answered once: what it gave is enough
                        break
                    raise
                algorithm = key.algorithm.decode()
                chosen = next((i for i, g in enumerate(groups) if algorithm in g), None)
                if chosen is None:
                    break
                keys.append(_key_line(key))
                groups = groups[chosen + 1:]
            return keys

    async def _handshake(self, host: str, port: int, algs: list[str], timeout: float,
                         deadline: float) -> asyncssh.SSHKey:
        """The server's host key for the first of `algs` it has, retrying until `deadline`
        (at least one attempt, however late)."""
        loop = asyncio.get_running_loop()
        why = "no answer"
        while True:
            budget = min(ATTEMPT_TIMEOUT, max(deadline - loop.time(), RETRY_EVERY))
            options = asyncssh.SSHClientConnectionOptions(
                client_keys=None, agent_path=None, config=None, connect_timeout=budget)
            try:
                key = await asyncio.wait_for(asyncssh.get_server_host_key(
                    host, port, server_host_key_algs=algs, options=options), budget + 1)
            except asyncssh.KeyExchangeFailed as exc:
                raise _NoMoreKeys() from exc
            except (OSError, EOFError, asyncssh.Error) as exc:  # TimeoutError is an OSError
                why = _why(exc)
            else:
                if key is not None:
                    return key
                why = "no host key in the handshake"
            left = deadline - loop.time()
            if left <= 0:
                raise ProbeFailed(f"ssh on {_where(host, port)}: {why} for {timeout:g} s")
            await asyncio.sleep(min(RETRY_EVERY, left))


class FakeProber:
    """`Probe` for unit tests: answers at once, one fake key per host, or fails the hosts in
    `fail_hosts`."""

    def __init__(self) -> None:
        self.fail_hosts: set[str] = set()
        self.scanned: list[tuple[str, int]] = []
        self.closed = False
        self._lock = threading.Lock()

    def scan(self, host: str, port: int, timeout: float
             ) -> concurrent.futures.Future[list[str]]:
        future: concurrent.futures.Future[list[str]] = concurrent.futures.Future()
        with self._lock:
            self.scanned.append((host, port))
            failing = host in self.fail_hosts
        if failing:
            future.set_exception(ProbeFailed(
                f"ssh on {_where(host, port)}: connection refused for {timeout:g} s"))
        else:
            future.set_result([f"ssh-ed25519 AAAAfake{host}"])
        return future

    def close(self) -> None:
        self.closed = True
